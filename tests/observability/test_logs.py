"""Structured logs (observability/logs.py): the JSON-lines formatter, the text formatter,
and the filter that keeps phone numbers out of every log line."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from ringback.observability import logs
from tests.conftest import REPO

KEY = b"test-log-hash-key"
NUMBER = "+14155550123"


def token(digits: str, key: bytes = KEY) -> str:
    return "phone#" + hmac.new(key, digits.encode(), hashlib.sha256).hexdigest()[:8]


TOKEN = token("14155550123")


@pytest.fixture(autouse=True)
def fixed_key_and_clean_logging():
    root = logging.getLogger()
    handlers, level, current = root.handlers[:], root.level, logs._current
    logs.set_hash_key(KEY)
    yield
    logs.set_hash_key(None)
    logs._current = current
    root.handlers[:] = handlers
    root.setLevel(level)


def make_record(msg, *args, level=logging.INFO, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.getLogger("ringback.test").makeRecord(
        "ringback.test", level, __file__, 10, msg, args, exc_info, extra=extra or None
    )
    record.created = datetime(2026, 11, 26, 10, 24, 5, 123456, tzinfo=UTC).timestamp()
    return record


def json_line(record: logging.LogRecord, redact_filter: bool = True) -> dict:
    if redact_filter:
        assert logs.RedactPhoneNumbers().filter(record) is True
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


# ---------------------------------------------------------------- JSON lines
def test_json_line_has_the_core_fields_and_the_extras():
    entry = json_line(
        make_record(
            "action %s sent", "c1:first_sms", case_id="c1", action_id="c1:first_sms", practice_id="maple-family"
        )
    )
    assert entry == {
        "ts": "2026-11-26T10:24:05.123Z",
        "level": "INFO",
        "logger": "ringback.test",
        "msg": "action c1:first_sms sent",
        "case_id": "c1",
        "action_id": "c1:first_sms",
        "practice_id": "maple-family",
    }


def test_exception_is_one_string_field_and_the_line_stays_one_line():
    try:
        raise ValueError("bad payload\nsecond line")
    except ValueError:
        record = make_record("could not process\nthe event", level=logging.ERROR, exc_info=sys.exc_info())
    entry = json_line(record)
    assert entry["level"] == "ERROR"
    assert entry["msg"] == "could not process\nthe event"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].rstrip().endswith("ValueError: bad payload\nsecond line")


def test_extras_that_are_not_json_become_strings_and_do_not_shadow_core_fields():
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    entry = json_line(make_record("x", thing=Thing(), ts="spoofed", count=3, ok=True, ids=["a", "b"]))
    assert entry["thing"] == "a thing" and entry["count"] == 3 and entry["ok"] is True
    assert entry["ids"] == ["a", "b"]
    assert entry["ts"] == "2026-11-26T10:24:05.123Z" and entry["extra_ts"] == "spoofed"


# ---------------------------------------------------------------- redaction
def test_a_number_in_the_message_is_replaced_by_its_hash_token():
    entry = json_line(make_record(f"SMS to {NUMBER} sent"))
    assert entry["msg"] == f"SMS to {TOKEN} sent"


@pytest.mark.parametrize("arg", [NUMBER, ValueError(f"unknown caller {NUMBER}"), {"to": NUMBER}, [NUMBER]])
def test_a_number_in_an_argument_is_redacted_whatever_its_type(arg):
    record = make_record("rejected: %s", arg)
    logs.RedactPhoneNumbers().filter(record)
    assert NUMBER not in record.getMessage() and TOKEN in record.getMessage()
    assert NUMBER not in json.dumps(json_line(record, redact_filter=False))


def test_a_mapping_argument_is_redacted_value_by_value():
    record = make_record("%(who)s called %(n)d times", {"who": NUMBER, "n": 3})
    logs.RedactPhoneNumbers().filter(record)
    assert record.getMessage() == f"{TOKEN} called 3 times"


def test_numbers_in_extras_and_tracebacks_are_redacted():
    try:
        raise RuntimeError(f"Twilio 21610 for {NUMBER}")
    except RuntimeError:
        record = make_record("send failed", level=logging.ERROR, exc_info=sys.exc_info(), caller=NUMBER)
    entry = json_line(record)
    assert entry["caller"] == TOKEN
    assert NUMBER not in entry["exc"] and TOKEN in entry["exc"]


@pytest.mark.parametrize(
    "shown",
    [
        "+14155550123",
        "+1 415 555 0123",
        "+1-415-555-0123",
        "+1 (415) 555-0123",
        "+1.415.555.0123",
        "%2B14155550123",
        "%2b14155550123",
    ],
)
def test_formats_of_the_same_number_give_the_same_token(shown):
    assert logs.redact(f"From={shown}&To=x") == f"From={TOKEN}&To=x"


def test_short_and_long_numbers():
    assert logs.redact("+4930123") == "+4930123"  # 7 digits: not E.164-looking
    assert logs.redact("+49301234") == token("49301234")  # 8 digits
    assert logs.redact("+491234567890123") == token("491234567890123")  # 15 digits
    assert logs.redact("+4912345678901234") == token("4912345678901234")  # longer: redacted too, to be safe


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T10:24:05+00:00",
        "offset +0530",
        "score +12.5",
        "HTTP 503 after 1234567890 ms",
        "case maple-family:3f9a2c1b0d",
        "a+b",
        "14155550123 without plus is not E.164-looking",
    ],
)
def test_other_text_is_left_alone(text):
    assert logs.redact(text) == text


def test_different_numbers_get_different_tokens_and_a_different_key_changes_them():
    a, b = logs.redact("+14155550123"), logs.redact("+14155550124")
    assert a != b
    logs.set_hash_key(b"another key")
    assert logs.redact("+14155550123") != a


def test_integer_arguments_keep_working_with_percent_d():
    record = make_record("%d calls from %s in %.1f s", 3, NUMBER, 1.5)
    logs.RedactPhoneNumbers().filter(record)
    assert record.getMessage() == f"3 calls from {TOKEN} in 1.5 s"


def test_the_formatters_redact_even_without_the_filter():
    record = make_record("to %s", NUMBER, caller=NUMBER)
    assert NUMBER not in logs.JsonFormatter().format(record)
    assert NUMBER not in logs.TextFormatter().format(make_record("to %s", NUMBER, caller=NUMBER))


def test_without_a_configured_key_hashes_still_match_within_the_process():
    logs.set_hash_key(None)
    logs.configure("text", "INFO", hash_key=None)
    first = logs.redact(NUMBER)
    assert first.startswith("phone#") and first == logs.redact(NUMBER) and first != TOKEN


def test_the_command_keys_the_hashes_with_the_secret_from_the_environment_or_the_secrets_dir(monkeypatch, tmp_path):
    from ringback.cli import main

    practices = str(REPO / "examples" / "practices.yaml")
    runner = CliRunner()
    env = {"RINGBACK_LOG_HASH_KEY": KEY.decode(), "RINGBACK_SECRETS_DIR": str(tmp_path)}
    assert runner.invoke(main, ["config", "apply", "--dry-run", practices], env=env).exit_code == 0
    assert logs.redact(NUMBER) == TOKEN
    (tmp_path / "RINGBACK_LOG_HASH_KEY").write_text("another key\n")
    env["RINGBACK_LOG_HASH_KEY"] = None  # type: ignore[assignment]  # CliRunner: None unsets it
    assert runner.invoke(main, ["config", "apply", "--dry-run", practices], env=env).exit_code == 0
    assert logs.redact(NUMBER) == token("14155550123", b"another key")


# ---------------------------------------------------------------- text
def test_text_line_shows_extras_after_the_message_and_the_traceback_below():
    try:
        raise KeyError("k")
    except KeyError:
        record = make_record(
            "step failed for %s",
            NUMBER,
            level=logging.WARNING,
            exc_info=sys.exc_info(),
            case_id="c1",
            action_id="c1:sms",
        )
    logs.RedactPhoneNumbers().filter(record)
    first, *rest = logs.TextFormatter().format(record).splitlines()
    assert first.endswith(f"WARNING ringback.test step failed for {TOKEN} [action_id=c1:sms case_id=c1]")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "KeyError: 'k'"


# ---------------------------------------------------------------- set-up
def _root_handler() -> logging.Handler:
    [handler] = logging.getLogger().handlers
    return handler


@pytest.mark.parametrize("fmt,formatter", [("json", logs.JsonFormatter), ("text", logs.TextFormatter)])
def test_configure_puts_the_formatter_and_the_filter_on_the_root_handler(fmt, formatter, capsys):
    logs.configure(fmt, "DEBUG")
    handler = _root_handler()
    assert type(handler.formatter) is formatter
    assert any(isinstance(f, logs.RedactPhoneNumbers) for f in handler.filters)
    logging.getLogger("ringback.x").debug("call from %s", NUMBER, extra={"case_id": "c9"})
    err = capsys.readouterr().err
    assert NUMBER not in err and TOKEN in err and "c9" in err
    if fmt == "json":
        assert json.loads(err)["case_id"] == "c9"


def test_configure_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("xml")


def test_faust_keeps_our_set_up(capsys):
    """A Faust/mode worker replaces the root handlers at start; the options we hand it restore ours."""
    from mode.utils import logging as mode_logging

    logs.configure("json", "INFO")
    options = logs.faust_worker_options()
    assert options["quiet"] is True
    mode_logging.setup_logging(loglevel="INFO", logging_config=options["logging_config"])
    assert type(_root_handler().formatter) is logs.JsonFormatter
    logging.getLogger("faust.worker").info("started for %s", NUMBER)
    entry = json.loads(capsys.readouterr().err)
    assert entry["logger"] == "faust.worker" and entry["msg"] == f"started for {TOKEN}"


def test_the_command_takes_the_format_from_option_or_environment():
    from ringback.cli import main

    practices = str(REPO / "examples" / "practices.yaml")
    runner = CliRunner()
    result = runner.invoke(main, ["config", "apply", "--dry-run", practices], env={"RINGBACK_LOG_FORMAT": "json"})
    assert result.exit_code == 0, result.output
    assert type(_root_handler().formatter) is logs.JsonFormatter and logs.current_format() == "json"
    result = runner.invoke(
        main, ["--log-format", "text", "config", "apply", "--dry-run", practices], env={"RINGBACK_LOG_FORMAT": "json"}
    )
    assert result.exit_code == 0, result.output
    assert type(_root_handler().formatter) is logs.TextFormatter
    result = runner.invoke(main, ["config", "apply", "--dry-run", practices], env={"RINGBACK_LOG_FORMAT": None})
    assert type(_root_handler().formatter) is logs.TextFormatter  # the default, for humans
    result = runner.invoke(main, ["config", "apply", "--dry-run", practices], env={"RINGBACK_LOG_FORMAT": "xml"})
    assert result.exit_code == 1 and "RINGBACK_LOG_FORMAT: Input should be 'text' or 'json'" in result.output
    result = runner.invoke(main, ["--log-format", "xml", "config", "apply", "--dry-run", practices])
    assert result.exit_code == 2 and "log-format" in result.output
