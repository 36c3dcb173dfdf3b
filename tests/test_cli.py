"""The `ringback` command's start-up: what every subcommand gets before it runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ringback.cli import main
from ringback.schemas import codec
from tests.conftest import REPO
from tests.schemas.samples import RECORDS


@pytest.fixture
def single_object_framing_after():
    yield
    codec.use_registry(None)


def test_schema_registry_url_switches_every_process_to_the_confluent_wire_format(single_object_framing_after):
    record = RECORDS["call_event"][0]
    assert codec.encode("call_event", record)[:2] == codec.SINGLE_OBJECT_MAGIC

    practices = str(REPO / "tests" / "fixtures" / "practices.yaml")
    result = CliRunner().invoke(
        main, ["config", "apply", "--dry-run", practices], env={"SCHEMA_REGISTRY_URL": "mock://cli-start"}
    )
    assert result.exit_code == 0, result.output

    framed = codec.encode("call_event", record, topic="t.call-events")
    assert framed[:1] == codec.CONFLUENT_MAGIC and len(framed) > 5
    assert codec.decode("call_event", framed)["event_id"] == record["event_id"]
