"""What a practice is: the validated model of one entry of the practices file
(windows, quiet hours, SMS caps, templates, routing, the names of its secrets)."""

from __future__ import annotations

from datetime import time as dtime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ringback.domain.phones import to_e164
from ringback.domain.templates import ANY_PLACEHOLDER, DEFAULT_LANGUAGE, LANGUAGE_PATTERN, check_placeholders


class Windows(BaseModel):
    """Response windows and gates in seconds, with their defaults (docs/product.md, docs/stream-app.md)."""

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
        False, description="at most 1 a day, 3 a week, 160 characters, practice named, opt-out text"
    )


def _check_template(text: str) -> str:
    """A message template: plain text with only the allowed {placeholders} (which message may
    use which one, and the names of the messages, `config apply` checks: config/practices_file.py)."""
    return check_placeholders(text, ANY_PLACEHOLDER)


MessageTemplate = Annotated[str, Field(min_length=1, max_length=1600), AfterValidator(_check_template)]
PhoneNumber = Annotated[str, AfterValidator(to_e164)]


class CallFlow(BaseModel):
    """The ready-made Twilio call flow (sources/twilio/call_flow.py): ring the front desk for
    `ring_seconds`, then take a voicemail. Its number points its incoming-call webhook at ringback."""

    model_config = ConfigDict(extra="forbid")

    # Twilio rings at most ten <Number>s of one <Dial> at once; the first to pick up gets the call.
    front_desk: list[PhoneNumber] = Field(min_length=1, max_length=10)
    ring_seconds: int = Field(20, ge=5, le=120, description="how long the front desk rings before the voicemail")
    voicemail_greeting: str = Field(
        "Sorry we missed your call. Please leave a message after the tone and we will call you back.",
        min_length=1,
        max_length=500,
    )
    voicemail_max_seconds: int = Field(120, ge=10, le=600)
    machine_detection: bool = Field(True, description="tell a cell phone's voicemail from a person picking up")


# A language as the practices file writes it: a lower-case BCP 47 primary tag ("en", "es").
Language = Annotated[str, Field(pattern=LANGUAGE_PATTERN)]


class Practice(BaseModel):
    """One practice of the practices file (annotated: examples/practices.yaml)."""

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
    # Patient SMS texts by message name (e.g. new_patient_first), in the default language;
    # placeholders: domain/templates.py. Unset ones are the shipped texts.
    templates: dict[str, MessageTemplate] = Field(default_factory=dict)
    # The ready-made Twilio call flow; None: the practice's phone system runs its own.
    call_flow: CallFlow | None = None

    # The language of patient SMS when the EHR records none for the caller, or one without a text.
    default_language: Language = DEFAULT_LANGUAGE
    # Texts in other languages, by language then message name: {es: {urgent_ack: ...}}.
    templates_by_language: dict[Language, dict[str, MessageTemplate]] = Field(default_factory=dict)

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
    def _has_sender(self) -> Practice:
        if not self.sms_from and not self.messaging_service_sid:
            raise ValueError("set sms_from (a number) or messaging_service_sid: SMS needs a sender")
        return self

    @model_validator(mode="after")
    def _front_desk_is_not_the_practice_number(self) -> Practice:
        own = set(self.phone_numbers) & set(self.call_flow.front_desk if self.call_flow else ())
        if own:
            raise ValueError(
                f"call_flow.front_desk: {sorted(own)[0]} is one of the practice's own phone_numbers "
                "(the call would ring itself); list the phones that ring at the front desk"
            )
        return self


class PracticesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    practices: list[Practice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PracticesFile:
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
