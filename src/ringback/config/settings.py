"""Process settings: every environment variable a ringback process reads, typed, in one place.

The environment says where things are (broker, Twilio, SMTP) and how a process runs;
the practices file (`ringback.config.practices_file`) says how each practice wants its
missed calls handled. Each field is read from the variable of the same name in upper
case (`ringback_partitions` <- `RINGBACK_PARTITIONS`); an empty variable counts as
unset. The `ringback` command reads them once at start (`load_settings`) and hands the
object to what it builds; no other module reads the environment. The catalogue, with
the same groups: docs/configuration.md. Secrets read by name (the practices file's
`secrets`, `RINGBACK_CONSOLE_SECRET`, `RINGBACK_LOG_HASH_KEY`): `config/secrets.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ringback.config import user_dirs


def user_state_dir() -> Path:
    """`state` in the per-user data folder (~/.local/share/ringback/state on Linux): a process
    started anywhere never writes its tables into the current directory or an installation."""
    return user_dirs.data_path("state")


class SettingsError(ValueError):
    """An environment variable with a value of the wrong type; the message names it."""


class Settings(BaseSettings):
    """Process settings from the environment (every variable: docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False, env_ignore_empty=True)

    # ------------------------------------------------------------------ shared
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka brokers, host:port[,host:port...]")
    # How every Kafka client connects (kafka/connection.py; docs/kafka-security.md). The SASL
    # username and password, the key's password and the OAuth client secret are secrets.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="With SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
    )
    kafka_ssl_ca_file: Path | None = Field(
        None, description="CA certificates (PEM) the brokers' certificates must chain to (default: the system's)"
    )
    kafka_ssl_certificate_file: Path | None = Field(None, description="Client certificate (PEM), for mutual TLS")
    kafka_ssl_key_file: Path | None = Field(None, description="Its private key (PEM), for mutual TLS")
    kafka_sasl_oauthbearer_token_endpoint_url: str | None = Field(
        None, description="OAUTHBEARER: the OAuth 2 token endpoint (client-credentials grant)"
    )
    kafka_sasl_oauthbearer_client_id: str | None = Field(None, description="OAUTHBEARER: the OAuth client id")
    kafka_sasl_oauthbearer_scope: str | None = Field(None, description="OAUTHBEARER: scopes asked for, if any")
    kafka_client_id: str | None = Field(
        None,
        description="The client id of this process's Kafka clients, which brokers show in their logs and "
        "request metrics and key client quotas on; unset: ringback-<command> (ringback-ingest, "
        "ringback-worker, ringback-sinks, ...)",
    )
    ringback_namespace: str = Field(
        "ringback", description="Prefix of every topic and consumer group; test runs and environments each have one"
    )
    ringback_partitions: int = Field(
        8, ge=1, description="Partitions of the co-partitioned topics (call events, patient data, actions, state)"
    )
    ringback_replication_factor: int = Field(
        1, ge=1, description="Replicas of the topics the worker's and the sinks' Faust apps declare themselves"
    )
    ringback_state_dir: Path = Field(
        default_factory=user_state_dir, description="Local state: RocksDB tables, console accounts"
    )
    ringback_secrets_dir: Path = Field(
        Path("/run/secrets"), description="Folder of secret files, one per name (read when no variable has the name)"
    )
    ringback_config: Path | None = Field(
        None, description="The practices file the deployment applies (`ringback config apply`)"
    )
    ringback_phi_retention_days: int = Field(
        14,
        ge=1,
        description="How long the topics with personal data keep records (call events, actions, task updates, "
        "delivery receipts, dead letters), and the longest a deleted patient record stays in a compacted topic: "
        "longer than the longest case window plus the time to restore a stopped worker",
    )
    ringback_outcome_retention_days: int = Field(
        400, ge=1, description="How long the outcome topic (no personal data; read by BI and the report) keeps records"
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry; unset: Avro without a registry (schema fingerprint header)"
    )
    ringback_public_url: str | None = Field(
        None,
        description="The gateway's public base URL as the phone providers see it (signatures, SMS status "
        "callbacks); unset: the URL of the request as received, and no status callbacks",
    )

    # ------------------------------------------------------------------ stream worker (`ringback worker`)
    ringback_store: str = Field(
        "rocksdb://", description="Table store of the worker (and of the sinks, unless RINGBACK_SINKS_STORE)"
    )
    ringback_processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="Faust processing guarantee of the worker"
    )
    ringback_session_timeout_s: float = Field(
        10.0, gt=0, description="Worker consumer session timeout: how soon a dead worker's partitions move on"
    )
    ringback_heartbeat_interval_s: float = Field(2.0, gt=0, description="Worker consumer heartbeat interval")
    ringback_worker_web: bool = Field(True, description="Serve the worker's web port (/metrics)")
    ringback_worker_web_port: int = Field(6066, ge=0, description="The worker's web port (/metrics)")
    ringback_tick_interval_s: float = Field(
        0.25, gt=0, description="How often each worker ticks its partitions to fire due gate timers"
    )
    ringback_scan_max_records: int = Field(
        50000,
        ge=0,
        description="At most this many records back a worker taking over a partition reads the actions/outcomes "
        "partition for records it must not send again",
    )
    ringback_overdue_interval_s: float = Field(
        1.0, gt=0, description="How often the worker measures ringback_timers_overdue_seconds"
    )
    ringback_overdue_grace_ms: int = Field(
        1000, ge=0, description="A due gate timer counts as overdue once it is this late"
    )

    # ------------------------------------------------------------------ worker and sinks
    ringback_instance_id: str | None = Field(
        None,
        description="This process's stable name in its consumer group (static membership, Kafka's "
        "group.instance.id), unique per process: a process restarted under the same name takes its partitions "
        "back at once instead of waiting out the dead one's session; unset: dynamic membership",
    )
    ringback_gap_guard: bool = Field(
        True, description="Read back records Faust skips around a rebalance (off: trust Faust; for comparisons)"
    )
    ringback_gap_watch_s: float = Field(
        5.0, ge=0, description="How often the gap guard checks for a stalled partition (0: never)"
    )

    # ------------------------------------------------------------------ sinks (`ringback sinks`)
    ringback_sinks_store: str | None = Field(None, description="Table store of the sinks; unset: RINGBACK_STORE")
    ringback_sinks_web: bool = Field(True, description="Serve the sinks' web port (/metrics)")
    ringback_sinks_metrics_port: int = Field(9102, ge=0, description="The sinks' web port (/metrics)")
    ringback_sinks_commit_every: int = Field(1000, ge=1, description="Sinks commit offsets after this many records")
    ringback_sinks_commit_interval: float = Field(
        1.0, gt=0, description="Sinks commit offsets at least this often (seconds)"
    )
    ringback_sinks_session_timeout_s: float = Field(
        10.0, gt=0, description="Sinks consumer session timeout: how soon a killed sink's partitions move on"
    )
    ringback_sinks_heartbeat_s: float = Field(2.0, gt=0, description="Sinks consumer heartbeat interval")
    ringback_sinks_standbys: int = Field(1, ge=0, description="Standby copies of every sink table partition")
    ringback_sinks_tick_s: float = Field(1.0, gt=0, description="How often the sinks check for deferred SMS due")
    ringback_sinks_persist_timeout_s: float = Field(
        20.0, gt=0, description="How long a sink waits for the broker to acknowledge a table write"
    )
    ringback_sink_concurrency: int = Field(
        64, ge=1, description="Actions in flight per sink process (different callers; one caller's in order)"
    )
    ringback_sink_practice_concurrency: int = Field(
        16, ge=1, description="Twilio requests in flight per practice and sink process"
    )
    ringback_sink_retry_attempts: int = Field(6, ge=1, description="API calls per action, the first included")
    ringback_sink_retry_base_s: float = Field(
        1.0, ge=0, description="First backoff between attempts; doubles each attempt"
    )
    ringback_sink_retry_max_s: float = Field(60.0, ge=0, description="Longest backoff between attempts")
    ringback_sink_retry_after_cap_s: float = Field(
        120.0, ge=0, description="A longer Retry-After from an API is cut to this"
    )
    ringback_sink_retry_jitter_s: float = Field(1.0, ge=0, description="Random extra backoff, at most")
    twilio_account_sid: str | None = Field(None, description="Twilio account; unset: the sinks send no SMS")
    twilio_auth_token: str | None = Field(
        None, description="Twilio auth token (API calls; webhook signatures of practices without their own)"
    )
    twilio_api_base_url: str | None = Field(None, description="Another Twilio API base URL (a mock, in tests)")
    ringback_twilio_timeout_s: float = Field(10.0, gt=0, description="Timeout of one Twilio API call")
    ringback_slack_timeout_s: float = Field(10.0, gt=0, description="Timeout of one Slack webhook call")
    smtp_url: str | None = Field(
        None, description="smtp://[user:password@]host[:port][?starttls=...] or smtps://...; unset: no e-mail"
    )
    ringback_smtp_from: str = Field("ringback@localhost", description="Sender address of staff e-mails")
    ringback_smtp_timeout_s: float = Field(15.0, gt=0, description="Timeout of one SMTP delivery")
    ringback_console_url: str | None = Field(
        None,
        description="The staff console's base URL as staff open it; staff notifications link to their task "
        "there; unset: they name the task id instead",
    )

    # ------------------------------------------------------------------ gateway (`ringback ingest`)
    ringback_gateway_port: int = Field(8080, ge=0, description="Port of the webhook gateway (--port wins)")

    # ------------------------------------------------------------------ console (`ringback console`)
    ringback_console_port: int = Field(8081, ge=0, description="Port of the staff console (--port wins)")
    ringback_console_users: Path | None = Field(
        None, description="The console's account file; unset: <RINGBACK_STATE_DIR>/console/users.json"
    )
    ringback_console_ack_timeout_s: float = Field(
        5.0, gt=0, description="How long the console waits for the broker to acknowledge a task update"
    )
    ringback_console_session_s: int = Field(
        43200, ge=1, le=604800, description="Lifetime of a console login session (at most 7 days)"
    )
    ringback_console_login_delay_s: float = Field(
        1.0, gt=0, description="Wait after the 3rd failed sign-in of an account from one address; doubles each time"
    )
    ringback_console_login_max_delay_s: float = Field(
        60.0, gt=0, description="The longest wait between sign-in tries after failures"
    )
    ringback_trusted_proxies: str | None = Field(
        None,
        description="Addresses/networks (comma-separated) of the TLS-terminating proxy in front of the gateway and "
        "the console, whose X-Forwarded-Proto/-Host/-For are trusted; requests from elsewhere then get 400. Unset: "
        "those headers are ignored",
    )
    ringback_console_cookie_secure: bool = Field(False, description="Mark the session cookie Secure (behind HTTPS)")

    # -------------------------------------------------------------- sources (`cdr poll`, `ehr sync`, `gvoice watch`)
    ringback_cdr_metrics_port: int = Field(0, ge=0, description="/metrics port of the CDR poller (0: none)")
    ringback_ehr_metrics_port: int = Field(0, ge=0, description="/metrics port of `ehr sync --every` (0: none)")
    ringback_hl7_metrics_port: int = Field(0, ge=0, description="/metrics port of the HL7 listener `ehr hl7` (0: none)")
    ringback_ehr_smart_client_id: str | None = Field(
        None,
        description="SMART Backend Services client id the EHR registered; set: the EHR commands get their tokens "
        "with a JWT signed by the key in the secret RINGBACK_EHR_SMART_KEY (--smart-client-id wins)",
    )
    ringback_ehr_smart_scope: str = Field(
        "system/Patient.rs system/Appointment.rs system/Flag.rs",
        description="Scopes asked of the EHR's token endpoint (SMART v2; v1 servers: system/Patient.read ...)",
    )
    ringback_gvoice_imap_host: str | None = Field(None, description="IMAP server of the Google Voice mailbox")
    ringback_gvoice_imap_port: int = Field(993, ge=1, le=65535, description="Its port (993: IMAP over TLS)")
    ringback_gvoice_imap_user: str | None = Field(None, description="The mailbox's login")
    ringback_gvoice_imap_folder: str = Field("INBOX", description="The folder Google Voice's e-mails land in")
    ringback_gvoice_imap_tls: bool = Field(True, description="IMAP over TLS (off only for a server on loopback)")
    ringback_gvoice_imap_ca_file: Path | None = Field(
        None, description="CA certificates (PEM) to trust for the IMAP server (default: the system's)"
    )
    ringback_gvoice_poll_interval_s: float = Field(
        60.0, gt=0, description="Longest wait between mailbox reads (IDLE wakes the watcher sooner)"
    )
    ringback_gvoice_metrics_port: int = Field(0, ge=0, description="/metrics port of `gvoice watch` (0: none)")
    ringback_ehr_requests_per_minute: int = Field(
        0, ge=0, description="Most requests `ehr export` sends the EHR in any minute (0: no limit; eClinicalWorks: 250)"
    )
    ringback_ehr_export_poll_max_s: float = Field(
        120.0, gt=0, description="Longest wait between two polls of a Bulk export's status (caps Retry-After)"
    )

    # ------------------------------------------------------------------ observability
    ringback_log_level: str = Field("INFO", description="Log level (--log-level wins)")
    ringback_log_format: Literal["text", "json"] = Field(
        "text", description="text for a terminal, json (one object per line) in containers (--log-format wins)"
    )
    ringback_log_client_errors_interval_s: float = Field(
        10.0, gt=0, description="Kafka clients' connection errors: at most one log line per broker per this interval"
    )
    ringback_log_client_outage_error_s: float = Field(
        60.0, gt=0, description="A broker unreachable this long gets one ERROR line (before: WARNING)"
    )
    ringback_metrics_practice_labels: str = Field(
        "off", description="`practice` label of metrics: off, on (bounded), or a comma-separated allow-list of ids"
    )
    ringback_metrics_practice_labels_max: int = Field(
        50, ge=0, description="With labels on: at most this many practices per process, the others `other`"
    )
    ringback_faust_prometheus: bool = Field(
        True, description="Faust's own Prometheus monitor on /metrics (off: ours only, for the benchmark)"
    )
    ringback_lag_interval_s: float = Field(
        5.0, gt=0, description="How often the worker and the sinks read end offsets for the consumer lag"
    )

    # ------------------------------------------------------------------ test hooks (never set in production)
    ringback_fault_exit_after_sending: str | None = Field(
        None, description="The worker dies after sending the actions of this step, before writing its state"
    )
    ringback_cdr_fault_kill_after_batches: int | None = Field(
        None, description="The CDR poller dies after publishing this many batches, before its checkpoint"
    )
    ringback_sinks_clock_file: Path | None = Field(
        None, description="The sinks read the time (epoch seconds) from this file instead of the wall clock"
    )

    @field_validator("ringback_log_format", "ringback_processing_guarantee", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("ringback_trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str | None) -> str | None:
        from ringback.config.proxies import parse_trusted

        parse_trusted(value)  # a bad address is an error at start, not a proxy silently untrusted
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and self.kafka_sasl_mechanism is None:
            raise ValueError(
                f"KAFKA_SASL_MECHANISM must be set with KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
            )
        if (
            sasl
            and self.kafka_sasl_mechanism == "OAUTHBEARER"
            and not (self.kafka_sasl_oauthbearer_token_endpoint_url and self.kafka_sasl_oauthbearer_client_id)
        ):
            raise ValueError(
                "KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL and "
                "KAFKA_SASL_OAUTHBEARER_CLIENT_ID"
            )
        if (self.kafka_ssl_certificate_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError("KAFKA_SSL_CERTIFICATE_FILE and KAFKA_SSL_KEY_FILE go together (mutual TLS)")
        for name in ("kafka_ssl_ca_file", "kafka_ssl_certificate_file", "kafka_ssl_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{variable(name)}: no file {path}")
        return self

    @property
    def sinks_store(self) -> str:
        return self.ringback_sinks_store or self.ringback_store


def variable(field: str) -> str:
    """The environment variable of a Settings field."""
    return field.upper()


def load_settings() -> Settings:
    """The settings of this process; SettingsError (one line per bad variable) on a bad value."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"{variable(str(error['loc'][0])) if error['loc'] else 'environment'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise SettingsError("; ".join(problems)) from None
