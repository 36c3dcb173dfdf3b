"""How every Kafka client of ringback connects: the brokers, TLS and SASL, from the settings.

One place turns `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_MECHANISM`,
`KAFKA_SSL_*`, `KAFKA_SASL_OAUTHBEARER_*` and the secrets `KAFKA_SASL_USERNAME`,
`KAFKA_SASL_PASSWORD`, `KAFKA_SSL_KEY_PASSWORD`, `KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET` into the
configuration of both client libraries:

* `client_config(env)`: confluent-kafka (librdkafka) properties; every Producer, Consumer and
  AdminClient starts from it (`{**librdkafka(connection), "group.id": ...}`).
* `faust_broker(env)`: a Faust app's `broker` and `broker_credentials` (aiokafka's
  security_protocol, ssl_context, sasl_*; the token provider for OAUTHBEARER).
* `verify(env)`: at start, one metadata request; a refused password, an untrusted certificate
  or a wrong protocol stops the process with a message naming the setting instead of a
  client retrying for ever.

Hostname verification is always on (librdkafka `ssl.endpoint.identification.algorithm=https`,
`ssl.create_default_context`). tests/kafka/test_connection_sites.py checks that every client
construction site of the code base takes its configuration from here.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from typing import Any

from ringback.config.secrets import KAFKA_OAUTHBEARER_CLIENT_SECRET as OAUTHBEARER_CLIENT_SECRET
from ringback.config.secrets import KAFKA_SASL_PASSWORD as SASL_PASSWORD
from ringback.config.secrets import KAFKA_SASL_USERNAME as SASL_USERNAME
from ringback.config.secrets import KAFKA_SSL_KEY_PASSWORD as SSL_KEY_PASSWORD
from ringback.config.secrets import read_secret
from ringback.config.settings import Settings, SettingsError

Connection = str | Mapping[str, Any]
"""What a client takes: `client_config(env)`, or a bare "host:port[,...]" for a plaintext broker
(the tests' and the developer tools' local broker)."""


class KafkaAccessError(SettingsError):
    """The broker refused this process's credentials or certificate; the message names the setting."""


def _uses_tls(env: Settings) -> bool:
    return env.kafka_security_protocol in ("SSL", "SASL_SSL")


def _uses_sasl(env: Settings) -> bool:
    return env.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _required_secret(name: str, env: Settings) -> str:
    value = read_secret(name, env)
    if not value:
        raise KafkaAccessError(
            f"{name} is not set (KAFKA_SECURITY_PROTOCOL={env.kafka_security_protocol}, "
            f"KAFKA_SASL_MECHANISM={env.kafka_sasl_mechanism} need it): set the variable or put the file "
            f"{name} in RINGBACK_SECRETS_DIR"
        )
    return value


def client_id(env: Settings) -> str:
    """KAFKA_CLIENT_ID; the `ringback` command sets ringback-<command> (cli.py), code run
    without it (tests, tools) says ringback."""
    return env.kafka_client_id or "ringback"


def client_config(env: Settings) -> dict[str, Any]:
    """librdkafka properties: the brokers, the client id and, per the settings, TLS and SASL."""
    config: dict[str, Any] = {
        "bootstrap.servers": env.kafka_bootstrap_servers,
        "security.protocol": env.kafka_security_protocol,
        "client.id": client_id(env),
    }
    if _uses_tls(env):
        config["ssl.endpoint.identification.algorithm"] = "https"
        if env.kafka_ssl_ca_file:
            config["ssl.ca.location"] = str(env.kafka_ssl_ca_file)
        if env.kafka_ssl_certificate_file and env.kafka_ssl_key_file:
            config["ssl.certificate.location"] = str(env.kafka_ssl_certificate_file)
            config["ssl.key.location"] = str(env.kafka_ssl_key_file)
            key_password = read_secret(SSL_KEY_PASSWORD, env)
            if key_password:
                config["ssl.key.password"] = key_password
    if _uses_sasl(env):
        config["sasl.mechanism"] = env.kafka_sasl_mechanism
        if env.kafka_sasl_mechanism == "OAUTHBEARER":
            config["sasl.oauthbearer.method"] = "oidc"
            config["sasl.oauthbearer.token.endpoint.url"] = env.kafka_sasl_oauthbearer_token_endpoint_url
            config["sasl.oauthbearer.client.id"] = env.kafka_sasl_oauthbearer_client_id
            config["sasl.oauthbearer.client.secret"] = _required_secret(OAUTHBEARER_CLIENT_SECRET, env)
            if env.kafka_sasl_oauthbearer_scope:
                config["sasl.oauthbearer.scope"] = env.kafka_sasl_oauthbearer_scope
        else:
            config["sasl.username"] = _required_secret(SASL_USERNAME, env)
            config["sasl.password"] = _required_secret(SASL_PASSWORD, env)
    return config


def librdkafka(connection: Connection) -> dict[str, Any]:
    """The connection properties of a confluent-kafka client."""
    return {"bootstrap.servers": connection} if isinstance(connection, str) else dict(connection)


def bootstrap_servers(connection: Connection) -> str:
    """The brokers only, for messages (a client config also holds the password)."""
    return connection if isinstance(connection, str) else str(connection["bootstrap.servers"])


def ssl_context(env: Settings) -> ssl.SSLContext:
    """The TLS context of the aiokafka clients: CERT_REQUIRED, hostname checked, the CA file
    (else the system's CAs), the client certificate for mutual TLS."""
    context = ssl.create_default_context(cafile=str(env.kafka_ssl_ca_file) if env.kafka_ssl_ca_file else None)
    if env.kafka_ssl_certificate_file and env.kafka_ssl_key_file:
        context.load_cert_chain(
            str(env.kafka_ssl_certificate_file), str(env.kafka_ssl_key_file), read_secret(SSL_KEY_PASSWORD, env)
        )
    return context


def faust_broker(env: Settings) -> dict[str, Any]:
    """`broker`, `broker_credentials` and `broker_client_id` of a Faust app (its aiokafka
    consumer, producer and admin)."""
    import faust

    tls = ssl_context(env) if _uses_tls(env) else None
    credentials: Any = None
    if _uses_sasl(env) and env.kafka_sasl_mechanism == "OAUTHBEARER":
        from ringback.kafka.oauth import ClientCredentialsTokens

        tokens = ClientCredentialsTokens(
            str(env.kafka_sasl_oauthbearer_token_endpoint_url),
            str(env.kafka_sasl_oauthbearer_client_id),
            _required_secret(OAUTHBEARER_CLIENT_SECRET, env),
            env.kafka_sasl_oauthbearer_scope,
        )
        credentials = faust.OAuthCredentials(oauth_cb=tokens, ssl_context=tls)
    elif _uses_sasl(env):
        credentials = faust.SASLCredentials(
            username=_required_secret(SASL_USERNAME, env),
            password=_required_secret(SASL_PASSWORD, env),
            ssl_context=tls,
            mechanism=env.kafka_sasl_mechanism,
        )
    elif tls is not None:
        credentials = faust.SSLCredentials(tls)
    return {
        "broker": f"kafka://{env.kafka_bootstrap_servers}",
        "broker_credentials": credentials,
        "broker_client_id": client_id(env),
    }


def _explain(env: Settings, error: Any) -> str | None:
    """The setting to blame for a librdkafka error, or None (not a configuration problem)."""
    from confluent_kafka import KafkaError

    text = error.str()
    brokers = f"the Kafka brokers at {env.kafka_bootstrap_servers}"
    if error.code() == KafkaError._AUTHENTICATION:
        if env.kafka_sasl_mechanism == "OAUTHBEARER":
            who = "KAFKA_SASL_OAUTHBEARER_CLIENT_ID / the secret KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"
        elif _uses_sasl(env):
            who = f"the secrets {SASL_USERNAME} / {SASL_PASSWORD} (KAFKA_SASL_MECHANISM={env.kafka_sasl_mechanism})"
        else:
            who = "KAFKA_SSL_CERTIFICATE_FILE / KAFKA_SSL_KEY_FILE"
        return f"{brokers} refused {who}: {text}"
    if error.code() == KafkaError._SSL or "certificate verify failed" in text:
        return (
            f"TLS with {brokers} failed; check KAFKA_SSL_CA_FILE (the CA that signed the brokers' certificates, "
            f"and their names match KAFKA_BOOTSTRAP_SERVERS), the client certificate and that the brokers' listener "
            f"speaks KAFKA_SECURITY_PROTOCOL={env.kafka_security_protocol}: {text}"
        )
    if "security.protocol" in text or "SASL" in text.upper() and "mechanism" in text:
        return (
            f"{brokers} do not speak KAFKA_SECURITY_PROTOCOL={env.kafka_security_protocol}"
            f" / KAFKA_SASL_MECHANISM={env.kafka_sasl_mechanism}: {text}"
        )
    return None


def verify(env: Settings, timeout_s: float = 10.0) -> None:
    """One metadata request with this process's settings: KafkaAccessError, naming the setting,
    if the brokers refuse the credentials, the certificate or the protocol. Unreachable brokers
    are not a settings problem: then it returns after `timeout_s` and the clients wait as in any
    outage."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from ringback.observability import logs

    errors: list[Any] = []
    hung_up = _HangUps(logs.librdkafka_logger())
    config = {**client_config(env), "error_cb": errors.append, "logger": hung_up}
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException:
            admin.poll(0)  # serves error_cb
        for error in errors:
            problem = _explain(env, error)
            if problem:
                raise KafkaAccessError(problem)
        if hung_up.count >= 3 and not _uses_tls(env):
            raise KafkaAccessError(
                f"the Kafka brokers at {env.kafka_bootstrap_servers} close the connection at the first request: "
                f"they expect TLS, not KAFKA_SECURITY_PROTOCOL={env.kafka_security_protocol}"
            )


class _HangUps:
    """librdkafka's log lines, passed on; counts the broker closing the connection at the first
    request (a TLS listener reached without TLS)."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward
        self.count = 0

    def log(self, level: int, fmt: str, *args: Any) -> None:
        line = " ".join(str(a) for a in args)
        if "Disconnected" in line and "in state APIVERSION_QUERY" in line:
            self.count += 1
        self.forward.log(level, fmt, *args)
