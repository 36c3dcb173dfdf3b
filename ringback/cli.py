"""The `ringback` console command (SPEC section 10)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from ringback.settings import ConfigError, Settings, load_practices


def _env() -> Settings:
    return Settings()


@click.group()
@click.option("--log-level", default=lambda: os.environ.get("RINGBACK_LOG_LEVEL", "INFO"), show_default="INFO")
def main(log_level: str) -> None:
    """Recover the patients a practice loses to missed phone calls."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per HTTP request is noise at INFO (and would carry URLs into the logs).
    logging.getLogger("httpx").setLevel(logging.WARNING)


# ---------------------------------------------------------------- kafka
@main.group()
def kafka() -> None:
    """The local single-node Kafka broker (no Docker)."""


def _broker(port: int | None, data_dir: str | None):
    from ringback.local_kafka import LocalKafka

    if port is None:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    return LocalKafka(port=port, home=Path(data_dir) if data_dir else None)


_port_opt = click.option("--port", type=int, default=None,
                         help="listener port (default: from KAFKA_BOOTSTRAP_SERVERS, else 9092)")
_dir_opt = click.option("--data-dir", default=None, help="broker folder (default var/kafka/<port>)")


@kafka.command("start")
@_port_opt
@_dir_opt
def kafka_start(port: int | None, data_dir: str | None) -> None:
    """Fetch the jars if needed, format storage once, start, wait until it serves metadata."""
    from ringback.local_kafka import KafkaError

    broker = _broker(port, data_dir)
    try:
        broker.start()
    except KafkaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"kafka {broker.status()}")


@kafka.command("stop")
@_port_opt
@_dir_opt
def kafka_stop(port: int | None, data_dir: str | None) -> None:
    """Stop the broker cleanly."""
    broker = _broker(port, data_dir)
    click.echo("kafka stopped" if broker.stop() else "kafka was not running")


@kafka.command("status")
@_port_opt
@_dir_opt
def kafka_status(port: int | None, data_dir: str | None) -> None:
    """Say whether the broker runs; exit 1 when it does not."""
    broker = _broker(port, data_dir)
    click.echo(f"kafka {broker.status()}")
    sys.exit(0 if broker.pid() else 1)


# ---------------------------------------------------------------- config
@main.group()
def config() -> None:
    """The practices file."""


@config.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="validate only")
def config_apply(file: Path, dry_run: bool) -> None:
    """Validate a practices file and publish it to the config topic."""
    from connectors.kafka_producer import AckedProducer
    from ringback.clock import Clock
    from ringback.practice_directory import practice_record
    from schemas import codec
    from streams import topics

    try:
        practices = load_practices(file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        click.echo(f"{file}: {len(practices.practices)} practices, valid")
        return
    env = _env()
    topics.ensure_topics(env)
    producer = AckedProducer(env.kafka_bootstrap_servers, timeout_s=10)
    name = topics.topic_name(topics.PRACTICE_CONFIG, env)
    now = Clock().now_ms()
    for p in practices.practices:
        producer.send_sync(name, p.id.encode(), codec.encode("practice_config", practice_record(p, now)))
    producer.close()
    click.echo(f"published {len(practices.practices)} practices to {name}")


# ---------------------------------------------------------------- processes
@main.command()
@click.option("--host", default="0.0.0.0")
@click.option("--port", type=int, default=lambda: int(os.environ.get("RINGBACK_GATEWAY_PORT", "8080")),
              show_default="8080")
def ingest(host: str, port: int) -> None:
    """The webhook gateway."""
    from connectors.sources import gateway

    gateway.run(_env(), host=host, port=port)


def _run_faust(app, directory, env: Settings) -> None:
    import faust

    from streams import topics

    Path(app.conf.datadir).mkdir(parents=True, exist_ok=True)
    topics.ensure_topics(env)
    directory.follow(env)
    if not directory.wait_ready(60):
        raise click.ClickException("could not read the practice config topic within 60 s")
    worker = faust.Worker(app, loglevel=logging.getLevelName(logging.getLogger().level))
    worker.execute_from_commandline()


@main.command()
def worker() -> None:
    """A stream worker; several share the work through their consumer group."""
    from streams import topology  # noqa: F401 - declares the agents
    from streams.app import app, directory, env

    _run_faust(app, directory, env)


@main.command()
def sinks() -> None:
    """The sink workers: SMS, staff notifications, tasks."""
    from connectors.sinks.app import app, directory, env

    _run_faust(app, directory, env)


@main.command()
@click.option("--calls", type=int, default=5, help="simulated missed calls")
def demo(calls: int) -> None:
    """Local broker + gateway + worker + sinks + simulated missed calls."""
    from ringback.demo import run_demo

    sys.exit(run_demo(calls=calls))


if __name__ == "__main__":
    main()
