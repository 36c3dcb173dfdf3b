"""Phone numbers from PBX records and EHR data → the E.164 of the join key.

The join key (`practice_id|E.164`) only works if every source writes a caller's
number the same way. The webhook gateway normalises with `to_e164`
(phonenumbers, "possible number"); this does the same, and is stricter in one
place: a number that is only dialable locally (7 digits in North America, no area
code) is refused, because its E.164 form would be a different, wrong number.
Whatever this accepts, `to_e164` turns into the same string.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "invalid country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "local number without area code",
    ValidationResult.INVALID_LENGTH: "invalid length",
}


class PhoneRejected(ValueError):
    """A phone number that cannot be keyed; the message says why (never echoes the number)."""


def normalize(raw: str | None, region: str) -> str:
    """E.164 of `raw` read in `region` (ISO country code of the practice), or PhoneRejected."""
    if raw is None or not str(raw).strip():
        raise PhoneRejected("empty")
    try:
        parsed = phonenumbers.parse(str(raw), region)
    except NumberParseException as exc:
        raise PhoneRejected(f"not a phone number ({_parse_error(exc)})") from None
    result = phonenumbers.is_possible_number_with_reason(parsed)
    if result != ValidationResult.IS_POSSIBLE:
        raise PhoneRejected(_REASONS.get(result, f"not possible ({result})"))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str, fallback: str = "US") -> str:
    """The country (ISO 3166 alpha-2) of a number in E.164, e.g. a practice's first DID."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or fallback
    except NumberParseException:
        return fallback


def _parse_error(exc: NumberParseException) -> str:
    return {
        NumberParseException.INVALID_COUNTRY_CODE: "invalid country code",
        NumberParseException.NOT_A_NUMBER: "no digits that form a number",
        NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        NumberParseException.TOO_SHORT_NSN: "too short",
        NumberParseException.TOO_LONG: "too long",
    }.get(exc.error_type, "unparseable")


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
