"""Settings shared by every process: the environment, and the practices file.

The environment says where things are (broker, Twilio, SMTP); the practices file
says how each practice wants its missed calls handled. Both are validated here,
once, with errors that name the field.
"""

from __future__ import annotations

import os
import re
import string
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)
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


def read_secret(name: str, env: Settings | None = None) -> str | None:
    """A per-practice secret, named in the practices file: env var first, then a file."""
    value = os.environ.get(name)
    if value:
        return value
    env = env or settings()
    path = env.ringback_secrets_dir / name
    if path.is_file():
        return path.read_text().strip()
    return None


# Webhook secrets of the phone providers: the key a practice's `secrets` map uses, and the
# name of the account-wide secret (env var or secrets-dir file) used for practices whose map
# has no such key (one Dialpad company or Vonage account serving several practices).
PROVIDER_SECRETS: dict[str, tuple[str, str]] = {
    "twilio": ("twilio_auth_token", "TWILIO_AUTH_TOKEN"),
    "ringcentral": ("ringcentral_verification_token", "RINGCENTRAL_VERIFICATION_TOKEN"),
    "dialpad": ("dialpad_webhook_secret", "DIALPAD_WEBHOOK_SECRET"),
    "vonage": ("vonage_signature_secret", "VONAGE_SIGNATURE_SECRET"),
}


# ---------------------------------------------------------------- practices file

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def to_e164(raw: str, default_region: str = "US") -> str:
    """Normalise a phone number to E.164, or raise ValueError saying why."""
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError("not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class Windows(BaseModel):
    """Response windows and gates in seconds (SPEC section 6 defaults)."""

    model_config = ConfigDict(extra="forbid")

    first_response_hold: int = Field(45, ge=0, description="cancel-if-answered hold before the first SMS")
    new_patient_window: int = Field(15 * 60, gt=0)
    new_patient_followup: int = Field(2 * 3600, gt=0, description="second SMS + callback task if no reply")
    new_patient_callback_due: int = Field(4 * 3600, gt=0)
    urgent_window: int = Field(30 * 60, gt=0)
    urgent_ack: int = Field(5 * 60, ge=0, description="patient acknowledgement SMS at the latest")
    urgent_escalation: int = Field(45 * 60, gt=0, description="alert the manager if not called back")
    reschedule_window: int = Field(2 * 3600, gt=0)
    reschedule_gate: int = Field(4 * 3600, gt=0)
    reschedule_link_horizon: int = Field(14 * 86400, gt=0)
    reschedule_protect_horizon: int = Field(48 * 3600, gt=0)
    general_window: int = Field(4 * 3600, gt=0)
    general_task_due: int = Field(4 * 3600, gt=0)
    case_expiry: int = Field(24 * 3600, gt=0, description="an open case with nothing left to do closes")


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: dtime = dtime(8, 0)
    end: dtime = dtime(21, 0)


class SmsCaps(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_day: int = Field(3, ge=0)
    per_week: int = Field(6, ge=0)
    fcc_healthcare_exemption: bool = Field(
        False, description="at most 1 a day, 3 a week, 160 characters, practice named, opt-out text")


# Patient SMS templates may name only these: nothing clinical, nothing about the patient.
TEMPLATE_PLACEHOLDERS = frozenset({"practice_name", "booking_link", "reschedule_link", "callback_number"})


def _check_template(text: str) -> str:
    """A message template: plain text with only the allowed {placeholders}."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
    allowed = ", ".join("{" + p + "}" for p in sorted(TEMPLATE_PLACEHOLDERS))
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_PLACEHOLDERS:
            shown = "{" + name[:40] + "}" if name else "{}"
            raise ValueError(f"placeholder {shown} is not allowed (only {allowed}: "
                             "a patient SMS carries no clinical or personal fields)")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} may not carry a format spec or conversion")
    return text


MessageTemplate = Annotated[str, Field(min_length=1, max_length=1600), AfterValidator(_check_template)]


class Practice(BaseModel):
    """One practice of the practices file (SPEC section 10)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    name: str = Field(min_length=1, max_length=80)
    time_zone: str
    phone_numbers: list[str] = Field(min_length=1)
    sms_from: str | None = None
    messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    booking_link: str = Field(pattern=r"^https?://")
    reschedule_link: str | None = Field(None, pattern=r"^https?://")
    routing: dict[str, str] = Field(default_factory=dict)
    windows: Windows = Field(default_factory=Windows)
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    sms_caps: SmsCaps = Field(default_factory=SmsCaps)
    blocked_numbers: list[str] = Field(default_factory=list)
    # Names of secrets (env var or file in the secrets dir), never the values.
    secrets: dict[str, str] = Field(default_factory=dict)
    # Patient SMS templates by name (e.g. new_patient_first); placeholders: TEMPLATE_PLACEHOLDERS.
    templates: dict[str, MessageTemplate] = Field(default_factory=dict)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like America/Chicago)") from None
        return value

    @field_validator("phone_numbers", "blocked_numbers")
    @classmethod
    def _numbers(cls, values: list[str]) -> list[str]:
        return [to_e164(v) for v in values]

    @field_validator("sms_from")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return to_e164(value) if value else value

    @model_validator(mode="after")
    def _has_sender(self) -> "Practice":
        if not self.sms_from and not self.messaging_service_sid:
            raise ValueError("set sms_from (a number) or messaging_service_sid: SMS needs a sender")
        return self


class PracticesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    practices: list[Practice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "PracticesFile":
        seen_ids: set[str] = set()
        owner: dict[str, str] = {}
        for i, p in enumerate(self.practices):
            if p.id in seen_ids:
                raise ValueError(f"practices.{i}.id: duplicate practice id {p.id!r}")
            seen_ids.add(p.id)
            for n in p.phone_numbers:
                if n in owner:
                    raise ValueError(f"practices.{i}.phone_numbers: {n} already belongs to {owner[n]!r}")
                owner[n] = p.id
        return self


class ConfigError(ValueError):
    """A practices file that cannot be used; the message names the field path."""


def parse_practices(data: Any) -> PracticesFile:
    try:
        return PracticesFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"]) or "(file)"
            lines.append(f"{path}: {err['msg']}")
        raise ConfigError("invalid practices file:\n  " + "\n  ".join(lines)) from None


def load_practices(path: str | Path) -> PracticesFile:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_practices(data)
