"""Every Kafka client of the code base takes its connection from kafka/connection.py, so none
can miss the TLS/SASL settings; and the settings become the right options of both libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import faust
import pytest

from ringback.config.settings import Settings
from ringback.kafka import connection

SRC = Path(connection.__file__).resolve().parents[1]
CLIENTS = {"Producer", "Consumer", "AdminClient", "AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaClient", "App"}
# The benchmark drives a local plaintext broker it starts itself (docs/kafka-security.md says so).
EXEMPT = {"dev/bench"}


def _name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _connection_functions() -> set[str]:
    return {n.name for n in ast.parse(Path(connection.__file__).read_text()).body if isinstance(n, ast.FunctionDef)}


def _sites() -> list[tuple[str, int, bool]]:
    """(module, line, takes the connection) of every client constructed in src/ringback: the
    enclosing top-level function or class must call one of kafka/connection.py's functions."""
    wanted = _connection_functions()
    sites = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        if module == "kafka/connection.py" or any(module.startswith(e) for e in EXEMPT):
            continue
        for top in ast.parse(path.read_text()).body:
            calls = [n for n in ast.walk(top) if isinstance(n, ast.Call)]
            uses = any(_name(c) in wanted for c in calls)
            for call in calls:
                if _name(call) in CLIENTS:
                    sites.append((module, call.lineno, uses))
    return sites


def test_every_kafka_client_takes_its_connection_from_the_connection_module():
    sites = _sites()
    assert [f"{m}:{line}" for m, line, uses in sites if not uses] == []
    # The walk finds the clients (a rename must not make this test vacuous).
    modules = {m for m, _, _ in sites}
    assert {"kafka/producer.py", "kafka/faust_app.py", "kafka/admin.py", "kafka/topic_cache.py"} <= modules
    assert {"kafka/gap_guard.py", "report/reader.py", "worker/topology.py", "sources/cdr/checkpoints.py"} <= modules


def test_only_the_connection_module_reads_the_bootstrap_servers():
    """Passing KAFKA_BOOTSTRAP_SERVERS on its own would drop TLS and SASL."""
    readers = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "kafka_bootstrap_servers":
                readers.append(module)
    # cli.py: the port of the local broker `ringback kafka start` runs.
    assert (
        sorted(set(readers) - {"kafka/connection.py", "cli.py"} - {m for m in readers if m.startswith("dev/bench")})
        == []
    )


def settings(**values) -> Settings:
    return Settings(kafka_bootstrap_servers="kafka-1:9093", **values)


@pytest.fixture
def secrets_dir(tmp_path, monkeypatch):
    for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "KAFKA_SASL_USERNAME").write_text("worker\n")
    (tmp_path / "KAFKA_SASL_PASSWORD").write_text("s3cret\n")
    return tmp_path


def test_plaintext_is_the_default_and_adds_nothing():
    assert connection.client_config(settings()) == {
        "bootstrap.servers": "kafka-1:9093",
        "security.protocol": "PLAINTEXT",
        "client.id": "ringback",
    }
    assert connection.faust_broker(settings())["broker_credentials"] is None


def test_the_client_id_reaches_both_libraries():
    env = settings(kafka_client_id="ringback-worker")
    assert connection.client_config(env)["client.id"] == "ringback-worker"
    assert connection.faust_broker(env)["broker_client_id"] == "ringback-worker"


def test_sasl_ssl_with_scram_for_both_libraries(secrets_dir, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(_ca_pem())
    env = settings(
        ringback_secrets_dir=secrets_dir,
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_ssl_ca_file=ca,
    )
    assert connection.client_config(env) == {
        "bootstrap.servers": "kafka-1:9093",
        "security.protocol": "SASL_SSL",
        "client.id": "ringback",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(ca),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "s3cret",
    }
    faust_side = connection.faust_broker(env)
    credentials = faust_side["broker_credentials"]
    assert faust_side["broker"] == "kafka://kafka-1:9093"
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value) == (
        "worker",
        "s3cret",
        "SCRAM-SHA-512",
    )
    assert credentials.protocol.value == "SASL_SSL" and credentials.ssl_context.check_hostname


def test_oauthbearer_uses_the_client_credentials_grant(monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "client-secret")
    env = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauthbearer_token_endpoint_url="https://login.example.org/oauth2/token",
        kafka_sasl_oauthbearer_client_id="ringback-worker",
        kafka_sasl_oauthbearer_scope="kafka",
    )
    config = connection.client_config(env)
    assert config["sasl.oauthbearer.method"] == "oidc"
    assert config["sasl.oauthbearer.client.secret"] == "client-secret"
    assert config["sasl.oauthbearer.token.endpoint.url"] == "https://login.example.org/oauth2/token"
    credentials = connection.faust_broker(env)["broker_credentials"]
    assert isinstance(credentials, faust.OAuthCredentials) and credentials.oauth_cb.url.endswith("/token")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"}, "TOKEN_ENDPOINT_URL"),
        ({"kafka_ssl_key_file": "/nonexistent/key.pem"}, "KAFKA_SSL_CERTIFICATE_FILE"),
        ({"kafka_ssl_ca_file": "/nonexistent/ca.pem"}, "KAFKA_SSL_CA_FILE"),
    ],
)
def test_an_incomplete_security_setting_is_refused_naming_the_variable(values, named):
    with pytest.raises(ValueError, match=named):
        settings(**values)


def test_a_missing_password_names_the_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("KAFKA_SASL_PASSWORD", raising=False)
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "worker")
    env = settings(
        ringback_secrets_dir=tmp_path, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN"
    )
    with pytest.raises(connection.KafkaAccessError, match="KAFKA_SASL_PASSWORD is not set"):
        connection.client_config(env)


def _ca_pem() -> str:
    import tempfile

    from ringback.dev.certificates import make_broker_tls

    with tempfile.TemporaryDirectory() as folder:
        return make_broker_tls(Path(folder)).ca_file.read_text()
