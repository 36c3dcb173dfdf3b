"""`ringback report` on the real broker: the hand-computed scenario of
tests/report/test_kpis.py is produced to a fresh namespace's outcome topic and the
command's JSON must equal the hand computation; the HTML must embed its charts."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from ringback.config.settings import Settings
from ringback.kafka import admin, topics
from ringback.kafka.producer import AckedProducer
from ringback.schemas import codec
from tests.conftest import ARTIFACTS, REPO
from tests.report.test_kpis import (
    AS_OF,
    EXPECTED_MAPLE,
    EXPECTED_OAK,
    EXPECTED_RECORDS,
    EXPECTED_TOTAL,
    MAPLE,
    OAK,
    RECORDS,
    SINCE,
    UNTIL,
    case,
)

pytestmark = pytest.mark.integration

# Before the period, and produced with record timestamps of that time: `--since` seeks past them.
OLD_RECORDS = [
    case(
        f"OLD{i}",
        MAPLE,
        "NEW_PATIENT",
        "EXPIRED",
        f"10-0{i} 12:00:00",
        f"10-0{i} 09:00:00",
        final=True,
        responded=f"10-0{i} 09:01:00",
    )
    for i in range(1, 4)
]


@pytest.fixture(scope="module")
def outcome_env(kafka_bootstrap):
    """A namespace whose outcome topic holds: 3 old records, the scenario, one undecodable record."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, ringback_namespace=namespace, ringback_partitions=4)
    admin.ensure_topics(settings)
    name = topics.topic_name(topics.OUTCOMES, settings)

    old = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    for record in OLD_RECORDS:
        old.produce(name, key=record["case_id"].encode(), value=codec.encode("outcome", record), timestamp=record["at"])
    assert old.flush(15) == 0

    producer = AckedProducer(kafka_bootstrap, timeout_s=10)
    for record in RECORDS:
        producer.send_sync(name, record["case_id"].encode(), codec.encode("outcome", record))
    producer.send_sync(name, b"garbage", b"not an avro record")
    producer.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "RINGBACK_NAMESPACE": namespace,
            "RINGBACK_PARTITIONS": "4",
            "PYTHONUNBUFFERED": "1",
        }
    )
    out = ARTIFACTS / "test_report_cli"
    out.mkdir(parents=True, exist_ok=True)
    return env, out


def ringback(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ringback.cli", *args],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def weekly(outcome_env):
    """One run of the weekly report with --html and --json."""
    env, out = outcome_env
    html, js = out / "report.html", out / "report.json"
    for path in (html, js):
        path.unlink(missing_ok=True)
    result = ringback(
        env, "report", "--since", SINCE, "--until", UNTIL, "--as-of", AS_OF, "--html", str(html), "--json", str(js)
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(js.read_text()), html.read_text()


def assert_matches(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert actual[key] == value, f"{key}: {actual[key]!r} != {value!r}"


def test_json_numbers_equal_the_hand_computation(weekly):
    _, report, _ = weekly
    assert_matches(report["total"], EXPECTED_TOTAL)
    assert list(report["practices"]) == [MAPLE, OAK]
    assert_matches(report["practices"][MAPLE], EXPECTED_MAPLE)
    assert_matches(report["practices"][OAK], EXPECTED_OAK)
    assert report["records"] == EXPECTED_RECORDS


def test_since_seeks_by_timestamp_and_bad_records_are_skipped(weekly):
    result, report, _ = weekly
    # The 3 old records were never read (offsets_for_times); the undecodable one was, and skipped.
    assert report["source"]["start"] == "timestamp"
    assert report["source"]["records_read"] == len(RECORDS) + 1
    assert report["source"]["undecodable"] == 1
    assert "skipping an undecodable outcome record" in result.stderr
    assert "1 undecodable outcome records were skipped" in result.stdout


def test_terminal_table_shows_the_totals(weekly):
    result, _, _ = weekly
    total_row = next(line for line in result.stdout.splitlines() if line.startswith("TOTAL"))
    for cell in ("12 (2)", "80.0% (8/10)", "33.3% (3/9)", "1 min 15 s", "22 min 30 s", "33.3% (2/6)"):
        assert cell in total_row, (cell, total_row)


def test_html_embeds_its_charts_as_png_images(weekly):
    _, _, html = weekly
    images = re.findall(r'<img alt="[^"]+"\s+src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 4, len(images)  # baseline, latency, outcomes, by practice
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width >= 1000 and height >= 200, (width, height)
    assert "80%" in html and "8 of 10 cases" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained
    assert not re.search(r"\+\d{8,}", html)  # no phone numbers


def test_without_since_everything_is_read_and_the_numbers_do_not_change(outcome_env):
    env, out = outcome_env
    js = out / "all.json"
    result = ringback(env, "report", "--until", UNTIL, "--as-of", AS_OF, "--json", str(js))
    assert result.returncode == 0, result.stderr
    report = json.loads(js.read_text())
    assert report["source"]["start"] == "beginning"
    assert report["source"]["records_read"] == len(OLD_RECORDS) + len(RECORDS) + 1
    # With no lower bound, A6 (missed on 11-18) and the 3 old cases count too.
    assert report["total"]["cases"] == EXPECTED_TOTAL["cases"] + 1 + len(OLD_RECORDS)
    assert_matches(report["practices"][OAK], EXPECTED_OAK)


def test_a_practice_with_no_cases_gets_a_clear_empty_report(outcome_env):
    env, out = outcome_env
    js, html = out / "empty.json", out / "empty.html"
    result = ringback(
        env, "report", "--since", SINCE, "--practice", "no-such-practice", "--json", str(js), "--html", str(html)
    )
    assert result.returncode == 0, result.stderr
    assert "No cases in this period." in result.stdout
    report = json.loads(js.read_text())
    assert report["total"]["cases"] == 0 and report["practices"] == {}
    assert "No cases in this period." in html.read_text() and "data:image/png" not in html.read_text()


def test_a_namespace_without_an_outcome_topic_has_no_cases(outcome_env):
    env, _ = outcome_env
    result = ringback({**env, "RINGBACK_NAMESPACE": f"t{uuid.uuid4().hex[:10]}"}, "report", "--since", SINCE)
    assert result.returncode == 0, result.stderr
    assert "No cases in this period." in result.stdout


def test_json_logs_when_asked(outcome_env):
    env, _ = outcome_env
    result = ringback({**env, "RINGBACK_LOG_FORMAT": "json"}, "report", "--since", SINCE, "--until", UNTIL)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
    assert any(entry["level"] == "WARNING" and "undecodable" in entry["msg"] for entry in lines)
    datetime.fromisoformat(lines[0]["ts"].replace("Z", "+00:00")).astimezone(UTC)
