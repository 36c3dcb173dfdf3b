"""Process settings: every environment variable a ringback process reads, typed, in one place.

The environment says where things are (broker, Twilio, SMTP) and how a process runs;
the practices file (`ringback.config.practices_file`) says how each practice wants its
missed calls handled.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process settings from the environment (SPEC section 10)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    ringback_config: Path | None = None
    # Topic and consumer-group names start with this; tests give each run its own.
    ringback_namespace: str = "ringback"
    ringback_partitions: int = 8
    # Replicas of the topics the Faust apps declare (changelogs, ticks): RINGBACK_REPLICATION_FACTOR.
    ringback_replication_factor: int = Field(1, ge=1)
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_api_base_url: str | None = None
    smtp_url: str | None = None
    schema_registry_url: str | None = None
    ringback_secrets_dir: Path = Path("/run/secrets")
    # Public base URL of the gateway as the phone providers see it (signature checks
    # and SMS status callbacks); empty means "the URL of the request as received".
    ringback_public_url: str | None = None
    ringback_state_dir: Path = Path("var")


def settings() -> Settings:
    return Settings()
