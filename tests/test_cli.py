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


@pytest.fixture
def shows_client_ids():
    """A subcommand that prints what its Kafka clients would call themselves."""
    import click

    from ringback.cli import _env
    from ringback.kafka import connection

    @main.command("show-client-ids")
    def show() -> None:
        env = _env()
        click.echo(f"{connection.client_config(env)['client.id']} {connection.faust_broker(env)['broker_client_id']}")

    yield "show-client-ids"
    main.commands.pop("show-client-ids")


def test_each_command_names_its_kafka_clients_after_itself_unless_told(shows_client_ids):
    runner = CliRunner()
    named = runner.invoke(main, [shows_client_ids], env={"KAFKA_CLIENT_ID": None})
    assert named.exit_code == 0, named.output
    assert named.output.split() == ["ringback-show-client-ids"] * 2

    told = runner.invoke(main, [shows_client_ids], env={"KAFKA_CLIENT_ID": "clinic-east-sinks"})
    assert told.output.split() == ["clinic-east-sinks"] * 2
