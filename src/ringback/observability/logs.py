"""Logging for every ringback process: JSON lines for machines, text for humans,
and no phone number in either, even by mistake.

`configure(fmt, level)` is called once by the `ringback` command (`--log-format`,
env `RINGBACK_LOG_FORMAT=json|text`); Faust workers get the same set-up through
`faust_worker_options()` (a Faust/mode worker replaces the root handlers at start).

* `JsonFormatter`: one JSON object per line: `ts` (UTC, ms), `level`, `logger`,
  `msg`, every `extra=` field (`case_id`, `action_id`, `practice_id`, ...), and
  `exc` (the formatted traceback as one string) when there is an exception.
* `TextFormatter`: `time level logger message [key=value ...]` for a terminal.
* `RedactPhoneNumbers`: a filter on the handler that rewrites E.164-looking
  numbers (`+` then 8 or more digits, spaces/dots/dashes/brackets allowed
  between them; also URL-encoded `%2B...`) in the message, its arguments, the
  extra fields and the traceback to `phone#<8 hex>`: a keyed hash, so lines about
  the same number can be matched without showing it. Both formatters also redact
  their final output, so a handler without the filter still leaks nothing.

* `QuietClientErrors` (observability/client_errors.py), first on the handler: Kafka
  clients' connection errors during a broker outage at WARNING, one line per broker per
  interval with a count of the suppressed ones, one ERROR when the outage outlasts a
  threshold (`RINGBACK_LOG_CLIENT_ERRORS_INTERVAL_S`, `RINGBACK_LOG_CLIENT_OUTAGE_ERROR_S`).
  confluent-kafka clients log through it when given `librdkafka_logger()` (their
  `logger` option; otherwise librdkafka writes to stderr itself).

The hash key is the secret `RINGBACK_LOG_HASH_KEY` (env var or file in the
secrets dir), which the `ringback` command reads and hands to `configure`; without
it each process draws a random key, so hashes match only within one process (never
a plain unkeyed hash: phone numbers are few enough to be recovered from one by
brute force).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import logging.config
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ringback.observability.client_errors import QuietClientErrors

FORMATS = ("text", "json")

# `+` (or its URL encoding) and 8+ digits, with at most two separators between digits.
PHONE_RE = re.compile(r"(?:\+|%2[Bb])\d(?:[ .\-()]{0,2}\d){7,}")
_SEPARATORS = re.compile(r"[^\d]")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_key: bytes | None = None


def _hash_key() -> bytes:
    global _key
    if _key is None:
        _key = secrets.token_bytes(32)
    return _key


def set_hash_key(key: bytes | None) -> None:
    """Use this key from now on (None: draw a random one at the next use)."""
    global _key
    _key = key


def phone_token(number: str) -> str:
    """`phone#<8 hex>` for a phone number (separators and the URL-encoded plus ignored)."""
    text = number[3:] if number[:3].upper() == "%2B" else number
    digits = _SEPARATORS.sub("", text)
    digest = hmac.new(_hash_key(), digits.encode(), hashlib.sha256).hexdigest()[:8]
    return f"phone#{digest}"


def redact(text: str) -> str:
    """Every E.164-looking number in `text` replaced by its `phone#<hash>` token."""
    if "+" not in text and "%2" not in text:
        return text
    return PHONE_RE.sub(lambda m: phone_token(m.group(0)), text)


def _has_phone(text: str) -> bool:
    return ("+" in text or "%2" in text) and PHONE_RE.search(text) is not None


def _redact_value(value: Any) -> Any:
    """An argument or extra value, with any phone number in it redacted. Numbers
    and other plain values stay as they are (so `%d` still works); any other
    object whose text shows a phone number is replaced by its redacted text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact(value)
    try:
        text = str(value)
        shown = repr(value)
    except Exception:  # noqa: BLE001 - the formatter will report it; nothing to redact here
        return value
    if _has_phone(text) or _has_phone(shown):
        return redact(text)
    return value


class RedactPhoneNumbers(logging.Filter):
    """Rewrites phone numbers in a record before any formatter sees it."""

    _tb = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        else:
            record.msg = _redact_value(record.msg)
        if record.args:
            if isinstance(record.args, Mapping):
                record.args = {k: _redact_value(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_redact_value(a) for a in record.args)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD:
                setattr(record, name, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tb.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extras, exc."""

    CORE = ("ts", "level", "logger", "msg", "exc", "stack")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry[f"extra_{key}" if key in self.CORE else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`time level logger message [key=value ...]` (extras sorted), redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            fields = " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
            head, sep, tail = line.partition("\n")  # keep a traceback below the fields
            line = f"{head} [{fields}]{sep}{tail}"
        return redact(line)


LIBRDKAFKA_LOGGER = "librdkafka"


def librdkafka_logger() -> logging.Logger:
    """For confluent-kafka clients' `logger` option: librdkafka's lines then go through
    this set-up (format, redaction, quiet connection errors) instead of raw to stderr."""
    return logging.getLogger(LIBRDKAFKA_LOGGER)


@dataclass(frozen=True)
class _Setup:
    fmt: str = "text"
    level: str = "INFO"
    client_errors_interval_s: float = 10.0
    client_outage_error_s: float = 60.0


_current = _Setup()


def logging_config(
    fmt: str = "text",
    level: str | int = "INFO",
    client_errors_interval_s: float = 10.0,
    client_outage_error_s: float = 60.0,
) -> dict:
    """A `logging.config.dictConfig` dict: one stderr handler with the formatter of
    `fmt`, the quiet-client-errors and redaction filters, on the root logger."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    level = logging.getLevelName(level) if isinstance(level, int) else str(level).upper()
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "quiet_client_errors": {
                "()": QuietClientErrors,
                "interval_s": client_errors_interval_s,
                "error_after_s": client_outage_error_s,
            },
            "redact_phone_numbers": {"()": RedactPhoneNumbers},
        },
        "formatters": {"ringback": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "ringback",
                "filters": ["quiet_client_errors", "redact_phone_numbers"],
                "level": level,
            }
        },
        # One line per HTTP request is noise at INFO (and would carry URLs into the logs).
        "loggers": {"httpx": {"level": "WARNING"}},
        "root": {"level": level, "handlers": ["stderr"]},
    }


def configure(
    fmt: str = "text",
    level: str | int = "INFO",
    hash_key: bytes | None = None,
    client_errors_interval_s: float = 10.0,
    client_outage_error_s: float = 60.0,
) -> None:
    """Set up the root logger for this process (and remember it for Faust workers);
    `hash_key` keys the phone-number hashes (None: keep the process's random key)."""
    global _current
    if hash_key is not None:
        set_hash_key(hash_key)
    setup = _Setup(
        fmt.lower(),
        logging.getLevelName(level) if isinstance(level, int) else str(level).upper(),
        client_errors_interval_s,
        client_outage_error_s,
    )
    logging.config.dictConfig(_config(setup))
    _current = setup


def _config(setup: _Setup) -> dict:
    return logging_config(setup.fmt, setup.level, setup.client_errors_interval_s, setup.client_outage_error_s)


def current_format() -> str:
    return _current.fmt


def faust_worker_options() -> dict:
    """Keyword arguments for `faust.Worker` that keep this set-up: Faust replaces the
    root handlers with its own at start unless it is given a logging config. In
    JSON mode the worker's banner and spinner (plain text on stdout) are off."""
    return {"logging_config": _config(_current), "quiet": _current.fmt == "json"}
