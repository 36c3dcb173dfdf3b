"""The `ringback` console command: one subcommand per process or tool (README, "The `ringback` command")."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import click

from ringback.config.practices_file import ConfigError, load_practices
from ringback.config.settings import Settings, SettingsError, load_settings


def _env() -> Settings:
    """This process's settings (the environment, read once by `main`)."""
    return click.get_current_context().find_root().obj


class _Commands(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingsError as exc:  # e.g. the Kafka brokers refused a credential: one line naming the setting
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Commands)
@click.option("--log-level", default=None, show_default="INFO", help="env RINGBACK_LOG_LEVEL")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default=None,
    show_default="text",
    help="text for a terminal, json (one object per line) in containers; env RINGBACK_LOG_FORMAT",
)
@click.pass_context
def main(ctx: click.Context, log_level: str | None, log_format: str | None) -> None:
    """Recover the patients a practice loses to missed phone calls."""
    from ringback.config.secrets import LOG_HASH_KEY, read_secret
    from ringback.observability import logs, metrics
    from ringback.schemas import codec

    try:  # a bad value stops every command here, with one line naming the variable
        settings = ctx.obj = load_settings()
    except SettingsError as exc:
        raise click.ClickException(f"environment: {exc}") from None
    if settings.kafka_client_id is None and ctx.invoked_subcommand:
        # Brokers' logs, request metrics and quotas tell the process kinds apart.
        settings.kafka_client_id = f"ringback-{ctx.invoked_subcommand}"
    hash_key = read_secret(LOG_HASH_KEY, settings)
    # Root handler on stderr with the chosen formatter and the phone-number redaction filter.
    logs.configure(
        log_format or settings.ringback_log_format,
        log_level or settings.ringback_log_level,
        hash_key=hash_key.encode() if hash_key else None,
        client_errors_interval_s=settings.ringback_log_client_errors_interval_s,
        client_outage_error_s=settings.ringback_log_client_outage_error_s,
    )
    metrics.set_practice_labels(metrics.PracticeLabels.from_settings(settings))
    # Confluent wire format through the registry when SCHEMA_REGISTRY_URL is set (every process encodes).
    codec.use_registry(settings.schema_registry_url)
    # One line per HTTP request is noise at INFO (and would carry URLs into the logs).
    logging.getLogger("httpx").setLevel(logging.WARNING)


# ---------------------------------------------------------------- kafka
@main.group()
def kafka() -> None:
    """The local single-node Kafka broker (no Docker), and the ACLs of a secured cluster."""


def _broker(port: int | None, data_dir: str | None, secure: bool = False):
    from ringback.dev.local_kafka import LocalKafka

    if port is None:
        bootstrap = _env().kafka_bootstrap_servers
        port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    return LocalKafka(port=port, home=Path(data_dir) if data_dir else None, secure=secure)


_port_opt = click.option(
    "--port", type=int, default=None, help="listener port (default: from KAFKA_BOOTSTRAP_SERVERS, else 9092)"
)
_dir_opt = click.option(
    "--data-dir",
    default=None,
    help="the broker's folder: configuration, data, logs (default: kafka/<port> in the per-user data folder, "
    "e.g. ~/.local/share/ringback/kafka/9092)",
)


@kafka.command("start")
@_port_opt
@_dir_opt
@click.option(
    "--secure",
    is_flag=True,
    help="SASL_SSL with SCRAM, a CA made for it, the authorizer on (docs/kafka-security.md); kept by the data folder",
)
def kafka_start(port: int | None, data_dir: str | None, secure: bool) -> None:
    """Fetch the jars if needed, format storage once, start, wait until it serves metadata."""
    from ringback.dev.local_kafka import KafkaError

    broker = _broker(port, data_dir, secure)
    try:
        broker.start()
    except KafkaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"kafka {broker.status()}")
    if broker.secure:
        settings = broker.client_env()
        del settings["KAFKA_SASL_USERNAME"], settings["KAFKA_SASL_PASSWORD"]
        click.echo("connect as the super user `admin` with:")
        click.echo("".join(f"  export {k}={v}\n" for k, v in settings.items()), nl=False)
        click.echo(f"  export RINGBACK_SECRETS_DIR={broker.secrets_dir}  # KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD")


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


def _faust_internal_topics(env: Settings) -> dict[str, list[str]]:
    """The topics the worker's and the sinks' Faust apps create themselves, from the built topologies."""
    from ringback.clock import ManualClock
    from ringback.kafka import topics
    from ringback.kafka.practice_directory import PracticeDirectory
    from ringback.sinks import app as sinks_app
    from ringback.worker.app import make_app
    from ringback.worker.topology import build_topology

    worker = build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))
    sinks = sinks_app.build_sinks(sinks_app.make_app(env), env, PracticeDirectory(), ManualClock(0))
    return {
        topics.WORKER: [t.get_topic_name() for t in worker.internal_topics],
        topics.SINKS: [t.get_topic_name() for t in sinks.internal_topics],
    }


@kafka.command("acls")
@click.option(
    "--process",
    "processes",
    multiple=True,
    help="only this kind of process (repeatable): admin, gateway, worker, sinks, console, cdr, ehr, hl7, "
    "gvoice, report",
)
@click.option(
    "--principal-format",
    default="User:{namespace}-{process}",
    show_default=True,
    help="the principal of each kind of process",
)
@click.option("--apply", "apply_them", is_flag=True, help="create them on the cluster (needs an admin principal)")
def kafka_acls(processes: tuple[str, ...], principal_format: str, apply_them: bool) -> None:
    """Print the ACLs each kind of process needs (one principal per kind, least privilege), derived from the
    topic declarations; with --apply, create them. Columns: principal, permission, operation, resource,
    pattern, name."""
    from ringback.kafka import acls, admin, topics

    env = _env()
    unknown = sorted(set(processes) - set(topics.PROCESSES))
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not one of {', '.join(topics.PROCESSES)}", param_hint="--process"
        )
    rules = acls.all_acls(env, processes or topics.PROCESSES, principal_format, _faust_internal_topics(env))
    for rule in rules:
        click.echo(rule.line())
    if apply_them:
        from confluent_kafka import KafkaException

        try:
            count = acls.apply(admin.admin_client(env), rules)
        except KafkaException as exc:
            raise click.ClickException(f"the cluster refused the ACLs: {exc.args[0].str()}") from None
        click.echo(f"applied {count} ACLs", err=True)


# ---------------------------------------------------------------- config
@main.group()
def config() -> None:
    """The practices file."""


@config.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="validate only")
def config_apply(file: Path, dry_run: bool) -> None:
    """Validate a practices file and publish it to the config topic."""
    from ringback.clock import Clock
    from ringback.kafka import admin, topics
    from ringback.kafka.connection import client_config
    from ringback.kafka.practice_directory import practice_record
    from ringback.kafka.producer import AckedProducer
    from ringback.schemas import codec

    try:
        practices = load_practices(file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        click.echo(f"{file}: {len(practices.practices)} practices, valid")
        return
    env = _env()
    admin.ensure_topics(env, topics.ADMIN)  # and its principal may write the practices
    producer = AckedProducer(client_config(env), timeout_s=10)
    name = topics.topic_name(topics.PRACTICE_CONFIG, env)
    now = Clock().now_ms()
    for p in practices.practices:
        producer.send_sync(name, p.id.encode(), codec.encode("practice_config", practice_record(p, now)))
    producer.close()
    click.echo(f"published {len(practices.practices)} practices to {name}")


# ---------------------------------------------------------------- processes
@main.command()
@click.option("--host", default="0.0.0.0")
@click.option("--port", type=int, default=None, show_default="8080", help="env RINGBACK_GATEWAY_PORT")
def ingest(host: str, port: int | None) -> None:
    """The webhook gateway."""
    from ringback.sources import gateway

    env = _env()
    gateway.run(env, host=host, port=env.ringback_gateway_port if port is None else port)


def _run_faust(app, directory, env: Settings, process: str) -> None:
    import faust

    from ringback.kafka import admin

    Path(app.conf.datadir).mkdir(parents=True, exist_ok=True)
    admin.ensure_topics(env, process)  # and its principal may read and write what it does
    directory.follow(env)
    if not directory.wait_ready(60):
        raise click.ClickException("could not read the practice config topic within 60 s")
    from ringback.observability import logs

    # Faust replaces the root handlers at start: hand it ours (format, redaction filter).
    worker = faust.Worker(app, loglevel=logging.getLevelName(logging.getLogger().level), **logs.faust_worker_options())
    # At WARNING and above Faust keeps its terminal spinner and lowers the root logger to
    # DEBUG to feed it: every send and fetch would build a debug record for nothing.
    worker.spinner = None
    # Faust runs gc.collect() per table at every assignment (its RocksDB store); over the
    # objects of every import that blocked a restarted process for about 0.1 s each. They
    # live as long as the process: out of the collector's sight.
    gc.freeze()
    worker.execute_from_commandline()


@main.command()
def worker() -> None:
    """A stream worker; several share the work through their consumer group."""
    from ringback.clock import Clock
    from ringback.kafka import admin, topics
    from ringback.kafka.practice_directory import PracticeDirectory
    from ringback.worker.app import make_app
    from ringback.worker.topology import build_topology

    env = _env()
    app = make_app(env)
    directory = PracticeDirectory()  # every practice's settings, read from the config topic
    topology = build_topology(app, env, directory, Clock())
    try:  # joins are local reads only on co-partitioned topics: refuse to start otherwise
        admin.check_copartitioning(env, [t.get_topic_name() for t in topology.internal_topics])
    except admin.CopartitioningError as exc:
        raise click.ClickException(str(exc)) from None
    admin.ensure_internal_topics(env, topology.internal_topics)  # exist before the group assigns partitions
    _run_faust(app, directory, env, topics.WORKER)


@main.command()
def sinks() -> None:
    """The sink workers: SMS, staff notifications, tasks."""
    from ringback.kafka import admin, topics
    from ringback.kafka.practice_directory import PracticeDirectory
    from ringback.sinks.app import build_sinks, make_app
    from ringback.sinks.clock import sink_clock

    env = _env()
    app = make_app(env)
    directory = PracticeDirectory()  # every practice's settings, read from the config topic
    built = build_sinks(app, env, directory, sink_clock(env))
    admin.ensure_internal_topics(env, built.internal_topics)  # changelogs + ticks exist before the group assigns
    _run_faust(app, directory, env, topics.SINKS)


# ---------------------------------------------------------------- staff console
@main.group(invoke_without_command=True)
@click.option("--host", default="0.0.0.0")
@click.option("--port", type=int, default=None, show_default="8081", help="env RINGBACK_CONSOLE_PORT")
@click.pass_context
def console(ctx: click.Context, host: str, port: int | None) -> None:
    """The staff console: the callback task page (run without a subcommand) and its accounts."""
    if ctx.invoked_subcommand is None:
        from ringback.console import app as console_app

        env = _env()
        console_app.run(env, host=host, port=env.ringback_console_port if port is None else port)


def _console_users():
    from ringback.console.users import UserStore, users_path

    return UserStore(users_path(_env()))


@console.command("add-user")
@click.option("--practice", "practice_id", required=True, help="the practice id (practices file)")
@click.option("--username", required=True)
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="a role whose tasks the user works (repeatable): nurse, scheduling_coordinator, admin_team, ...",
)
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of stdin")
@click.option(
    "--update", is_flag=True, help="replace the password and roles of an existing account (its open sessions end)"
)
def console_add_user(
    practice_id: str, username: str, roles: tuple[str, ...], password_stdin: bool, update: bool
) -> None:
    """Create a staff account (password hashed with Argon2id)."""
    from ringback.clock import Clock
    from ringback.console.users import UserError

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    store = _console_users()
    try:
        user = store.add(practice_id, username.strip().lower(), password, list(roles), Clock().now_ms(), replace=update)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{'updated' if update else 'added'} {user.username} at {user.practice_id} "
        f"(roles: {', '.join(user.roles)}) in {store.path}"
    )


@console.command("remove-user")
@click.option("--practice", "practice_id", required=True)
@click.option("--username", required=True)
def console_remove_user(practice_id: str, username: str) -> None:
    """Delete a staff account (its sessions end at once)."""
    if not _console_users().remove(practice_id, username.strip().lower()):
        raise click.ClickException(f"no user {username!r} at {practice_id}")
    click.echo(f"removed {username} at {practice_id}")


@console.command("list-users")
@click.option("--practice", "practice_id", default=None)
def console_list_users(practice_id: str | None) -> None:
    """The staff accounts (never their password hashes)."""
    for user in _console_users().list(practice_id):
        click.echo(f"{user.practice_id}\t{user.username}\t{','.join(user.roles)}")


@main.command()
@click.option(
    "--practices",
    type=click.IntRange(1, 200),
    default=6,
    show_default=True,
    help="practices of the health system (the first is the reference practice; phone systems in turn: "
    "Twilio, RingCentral, Dialpad, Vonage, a legacy PBX, Google Voice)",
)
@click.option("--seed", type=int, default=7, show_default=True, help="the same seed plays the same day")
@click.option(
    "--speed",
    type=click.FloatRange(1, 3600),
    default=600.0,
    show_default=True,
    help="practice seconds per wall second (600: the 10-hour day in a minute; windows scale with it)",
)
@click.option(
    "--calls",
    type=click.IntRange(5, 2000),
    default=94,
    show_default=True,
    help="inbound calls a day at the reference practice (the others vary around it); ~19 % are missed",
)
@click.option("--keep-running", is_flag=True, help="after the report, leave the services up (Ctrl-C stops them)")
@click.option(
    "--data-dir",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the run's folder: practices file, secrets, logs, broker (default: a new demo/<time>-<pid> in the "
    "per-user data folder, e.g. ~/.local/share/ringback/demo/...)",
)
def demo(practices: int, seed: int, speed: float, calls: int, keep_running: bool, run_dir: Path | None) -> None:
    """A compressed practice day: local broker + every process + simulated traffic, then the KPI report."""
    from ringback.dev.demo import run_demo

    sys.exit(
        run_demo(practices=practices, seed=seed, speed=speed, calls=calls, keep_running=keep_running, run_dir=run_dir)
    )


# ---------------------------------------------------------------- benchmarks
@main.command("bench")
@click.option("--quick", is_flag=True, help="everything scaled down (CI-sized: a few minutes)")
@click.option(
    "--only",
    default=None,
    metavar="a,b,sink,c,d,e,scaling",
    help="figures to run: a throughput, b latency, sink SMS/s of one sink process, c gates, d restart, "
    "e kill -9 → next SMS, scaling "
    "(default: all)",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where bench.json, bench.md and the logs go (default: a new bench/<time>-<pid> in the per-user data "
    "folder, e.g. ~/.local/share/ringback/bench/...)",
)
@click.option(
    "--profile",
    "profile_worker",
    is_flag=True,
    help="sample the worker with py-spy during figure (a) (pip install py-spy)",
)
@click.option(
    "--api-latency-ms",
    type=click.FloatRange(min=0),
    default=250.0,
    show_default=True,
    help="how long the Twilio/Slack stand-in takes to answer (jittered ±50 %; 0 answers at once)",
)
def bench(quick: bool, only: str | None, out_dir: Path | None, profile_worker: bool, api_latency_ms: float) -> None:
    """The benchmarks against the targets (docs/benchmarks.md): throughput, latency, gate delay, restart, scaling."""
    from ringback.dev.bench import runner

    try:
        figures = runner.parse_only(only)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--only") from None
    results = runner.run(
        quick=quick,
        only=figures,
        out_dir=out_dir,
        command=runner.command_line(),
        profile_worker=profile_worker,
        api_latency_s=api_latency_ms / 1000,
    )
    sys.exit(1 if results["errors"] else 0)


# ---------------------------------------------------------------- legacy PBX CDRs
@main.group()
def cdr() -> None:
    """Call detail records of legacy PBXs (Asterisk / FreePBX Master.csv)."""


@cdr.command("poll")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--practice", "practice_id", required=True, help="the practice this PBX belongs to")
@click.option("--interval", type=float, default=30.0, show_default=True, help="seconds between polls")
@click.option("--file", "file_name", default="Master.csv", show_default=True, help="CDR file in DIRECTORY")
@click.option("--poller-id", default=None, help="checkpoint name (default: the practice id)")
@click.option(
    "--from-beginning", is_flag=True, help="without a checkpoint, read the file from its start (default: from its end)"
)
@click.option("--time-zone", default=None, help="the PBX's CDR time zone (default: the practice's)")
@click.option(
    "--outbound-context",
    "outbound_contexts",
    multiple=True,
    help="dcontext prefix of outbound calls (repeatable; default from-internal, outrt, ...)",
)
@click.option(
    "--metrics-port", type=int, default=None, help="serve /metrics on this port (env RINGBACK_CDR_METRICS_PORT; 0: off)"
)
def cdr_poll(
    directory: Path,
    practice_id: str,
    interval: float,
    file_name: str,
    poller_id: str | None,
    from_beginning: bool,
    time_zone: str | None,
    outbound_contexts: tuple[str, ...],
    metrics_port: int | None,
) -> None:
    """Turn the inbound calls in DIRECTORY/Master.csv into call events, as the file grows."""
    from ringback.sources.cdr import poller as cdr_poller
    from ringback.sources.cdr.records import DEFAULT_OUTBOUND_CONTEXTS

    if interval <= 0:
        raise click.BadParameter("must be above 0", param_hint="--interval")
    try:
        cdr_poller.run(
            _env(),
            str(directory),
            practice_id,
            interval=interval,
            file_name=file_name,
            poller_id=poller_id,
            from_beginning=from_beginning,
            time_zone=time_zone,
            outbound_contexts=outbound_contexts or DEFAULT_OUTBOUND_CONTEXTS,
            metrics_port=(_env().ringback_cdr_metrics_port if metrics_port is None else metrics_port) or None,
        )
    except (LookupError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


# ---------------------------------------------------------------- Google Voice (Workspace)
@main.group()
def gvoice() -> None:
    """Google Voice: its notification e-mails (IMAP) and the Admin console's audit-log export."""


@gvoice.command("watch")
@click.option("--practice", "practice_id", default=None, help="the practice that owns the mailbox")
@click.option("--host", default=None, help="IMAP server (env RINGBACK_GVOICE_IMAP_HOST)")
@click.option("--port", type=int, default=None, help="IMAP port (env RINGBACK_GVOICE_IMAP_PORT; 993)")
@click.option("--user", default=None, help="mailbox login (env RINGBACK_GVOICE_IMAP_USER)")
@click.option("--folder", default=None, help="folder to watch (env RINGBACK_GVOICE_IMAP_FOLDER; INBOX)")
@click.option("--no-tls", is_flag=True, help="plain IMAP (only for a server on loopback)")
@click.option("--ca-file", default=None, help="CA certificates (PEM) to trust (env RINGBACK_GVOICE_IMAP_CA_FILE)")
@click.option("--password-secret", default=None, help="secret holding the password (default GVOICE_IMAP_PASSWORD)")
@click.option("--interval", type=float, default=None, help="longest wait between reads, s (IDLE wakes sooner)")
@click.option("--watcher-id", default=None, help="checkpoint name (default: the practice id, else the user)")
@click.option(
    "--from-beginning", is_flag=True, help="without a checkpoint, read the folder's existing mail (default: new mail)"
)
@click.option("--metrics-port", type=int, default=None, help="serve /metrics (env RINGBACK_GVOICE_METRICS_PORT)")
def gvoice_watch(
    practice_id: str | None,
    host: str | None,
    port: int | None,
    user: str | None,
    folder: str | None,
    no_tls: bool,
    ca_file: str | None,
    password_secret: str | None,
    interval: float | None,
    watcher_id: str | None,
    from_beginning: bool,
    metrics_port: int | None,
) -> None:
    """Turn Google Voice's missed-call, voicemail and text e-mails into call events, as they arrive."""
    from ringback.sources.gvoice import watcher

    env = _env()
    host = host or env.ringback_gvoice_imap_host
    user = user or env.ringback_gvoice_imap_user
    if not host or not user:
        raise click.UsageError("the mailbox needs --host and --user (or RINGBACK_GVOICE_IMAP_HOST / _USER)")
    interval = env.ringback_gvoice_poll_interval_s if interval is None else interval
    if interval <= 0:
        raise click.BadParameter("must be above 0", param_hint="--interval")
    ca = ca_file or (str(env.ringback_gvoice_imap_ca_file) if env.ringback_gvoice_imap_ca_file else None)
    try:
        watcher.run(
            env,
            practice_id,
            host=host,
            user=user,
            port=port or env.ringback_gvoice_imap_port,
            tls=env.ringback_gvoice_imap_tls and not no_tls,
            ca_file=ca,
            folder=folder or env.ringback_gvoice_imap_folder,
            interval=interval,
            watcher_id=watcher_id,
            from_beginning=from_beginning,
            password_secret=password_secret,
            metrics_port=(env.ringback_gvoice_metrics_port if metrics_port is None else metrics_port) or None,
        )
    except (LookupError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@gvoice.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--practice", "practice_id", required=True, help="the practice whose Google Voice numbers the log covers")
@click.option("--time-zone", default=None, help="zone of dates without an offset (default: the practice's)")
def gvoice_import(file: Path, practice_id: str, time_zone: str | None) -> None:
    """Import the Admin console's Voice audit-log export (CSV); importing twice acts on nothing twice."""
    import json

    from ringback.sources.gvoice import audit_log

    try:
        report = audit_log.run_import(_env(), file, practice_id, time_zone=time_zone)
    except (LookupError, RuntimeError, audit_log.AuditFileError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, sort_keys=True))


# ---------------------------------------------------------------- EHR (FHIR R4)
@main.group()
def ehr() -> None:
    """Patients, appointments and flags from the EHR (FHIR R4)."""


_region_opt = click.option(
    "--region", default=None, help="country for numbers without +CC (default: that of the practice's first number)"
)


def _print_report(report) -> None:
    import json

    click.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))


def _smart_opts(command):
    """SMART Backend Services options, shared by the EHR commands that call the FHIR server."""
    command = click.option(
        "--smart-scope", default=None, help="scopes to ask for (env RINGBACK_EHR_SMART_SCOPE; default: SMART v2 reads)"
    )(command)
    return click.option(
        "--smart-client-id",
        default=None,
        help="authorize with SMART Backend Services as this client (env RINGBACK_EHR_SMART_CLIENT_ID; "
        "key: the secret RINGBACK_EHR_SMART_KEY, made by `ringback ehr keys`)",
    )(command)


def _smart_auth(base_url: str, client_id: str | None, scope: str | None):
    """The SMART auth for this base URL, or None when no client id is configured."""
    from ringback.sources.ehr import smart

    env = _env()
    client_id = client_id or env.ringback_ehr_smart_client_id
    if not client_id:
        return None
    try:
        return smart.smart_auth(env, base_url, client_id, scope or env.ringback_ehr_smart_scope)
    except smart.SmartError as exc:
        raise click.ClickException(str(exc)) from None


@ehr.command("sync")
@click.option("--base-url", required=True, help="FHIR R4 base URL, e.g. https://ehr.example.org/fhir")
@click.option("--practice", "practice_id", required=True)
@click.option(
    "--since",
    default=None,
    help="only resources updated at or after this FHIR instant (default: the saved cursor minus --overlap)",
)
@click.option("--full", is_flag=True, help="read everything, and tombstone what the server no longer has")
@click.option(
    "--overlap",
    type=int,
    default=300,
    show_default=True,
    help="seconds re-read before the saved cursor (late commits on the server)",
)
@click.option("--page-size", type=int, default=100, show_default=True)
@click.option("--token-secret", default=None, help="name of the secret (env var or file) holding a bearer token")
@click.option("--no-deletions", is_flag=True, help="do not read [type]/_history for deletions")
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    default=None,
    help="seconds: sync again and again at this interval, serving /metrics (default: once)",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="with --every: serve /metrics on this port (env RINGBACK_EHR_METRICS_PORT; 0: none; "
    "a one-shot sync prints its report instead)",
)
@_region_opt
@_smart_opts
def ehr_sync(
    base_url: str,
    practice_id: str,
    since: str | None,
    full: bool,
    overlap: int,
    page_size: int,
    token_secret: str | None,
    no_deletions: bool,
    every: float | None,
    metrics_port: int | None,
    region: str | None,
    smart_client_id: str | None,
    smart_scope: str | None,
) -> None:
    """Pull Patient, Appointment and Flag from a FHIR server; publish keyed records and tombstones."""
    from ringback.config.secrets import read_secret
    from ringback.sources.ehr import fhir

    env = _env()
    token = None
    auth = _smart_auth(base_url, smart_client_id, smart_scope)
    if auth is not None and token_secret:
        raise click.UsageError("--token-secret and SMART (--smart-client-id) exclude each other")
    if token_secret:
        token = read_secret(token_secret, env)
        if not token:
            raise click.ClickException(f"secret {token_secret!r} not found (env var or secrets dir)")
    if every is not None and full:
        raise click.UsageError("--full reads everything and tombstones the rest: run it once, not --every")

    def sync_once(first: bool):
        return fhir.run_sync(
            env,
            base_url,
            practice_id,
            since=since if first else None,
            full=full,
            region=region,
            token=token,
            page_size=page_size,
            overlap_s=overlap,
            deletions=not no_deletions,
            auth=auth,
        )

    if every is not None:
        from prometheus_client import start_http_server

        from ringback.sources.ehr import sync_loop as ehr_sync_loop

        ehr_sync_loop.declare_series()
        if metrics_port is None:
            metrics_port = env.ringback_ehr_metrics_port
        if metrics_port:
            start_http_server(metrics_port)
        ehr_sync_loop.run_forever(sync_once, every, report=_print_report_line)
        return
    try:
        report = sync_once(True)
    except (LookupError, RuntimeError, fhir.FhirError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(report)


def _print_report_line(report) -> None:
    import json

    click.echo(json.dumps(report.as_dict(), sort_keys=True))


@ehr.command("keys")
@click.option(
    "--alg",
    type=click.Choice(["RS384", "ES384"]),
    default="RS384",
    show_default=True,
    help="RS384 (RSA 2048): accepted by every SMART server; ES384 (EC P-384): where the EHR accepts it",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="secrets folder to write the private key set RINGBACK_EHR_SMART_KEY into (default: RINGBACK_SECRETS_DIR)",
)
def ehr_keys(alg: str, out: Path | None) -> None:
    """Add a key pair for SMART Backend Services and print the public JWKS to register with the EHR.

    The private key goes into the secret file (0600), never to the output. Run again to
    rotate: the new key is added, the JWKS printed has both, and the newest one signs."""
    import json

    from ringback.sources.ehr import smart

    path = (out or _env().ringback_secrets_dir) / smart.KEY_SECRET
    try:
        jwks = smart.add_key(path, alg)
    except (smart.SmartError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(jwks, indent=2))
    click.echo(f"private keys: {path} ({len(jwks['keys'])}; the last one signs)", err=True)


@ehr.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--practice", "practice_id", required=True)
@_region_opt
def ehr_import(files: tuple[Path, ...], practice_id: str, region: str | None) -> None:
    """Import FHIR Bulk Data NDJSON files (Patient, Appointment, Flag; `deleted` Bundles)."""
    from ringback.sources.ehr import fhir

    try:
        report = fhir.run_import(_env(), list(files), practice_id, region=region)
    except (LookupError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(report)


@ehr.command("export")
@click.option("--base-url", required=True, help="FHIR R4 base URL of a server with Bulk Data $export")
@click.option("--practice", "practice_id", required=True)
@click.option("--level", type=click.Choice(["system", "patient", "group"]), default="system", show_default=True)
@click.option("--group", "group_id", default=None, help="with --level group: the Group id")
@click.option("--type", "types", default="Patient,Appointment,Flag", show_default=True, help="_type")
@click.option("--since", default=None, help="_since (default: the transactionTime of the last completed export)")
@click.option("--full", is_flag=True, help="export everything (no _since)")
@click.option("--token-secret", default=None, help="name of the secret (env var or file) holding a bearer token")
@click.option(
    "--requests-per-minute", type=click.IntRange(min=0), default=None, help="env RINGBACK_EHR_REQUESTS_PER_MINUTE"
)
@click.option("--poll-max", type=click.FloatRange(min=0.1), default=None, help="env RINGBACK_EHR_EXPORT_POLL_MAX_S")
@click.option(
    "--every", type=click.FloatRange(min=1), default=None, help="seconds: export again and again, with /metrics"
)
@click.option("--metrics-port", type=int, default=None, help="with --every (env RINGBACK_EHR_METRICS_PORT; 0: none)")
@_region_opt
@_smart_opts
def ehr_export(
    base_url: str,
    practice_id: str,
    level: str,
    group_id: str | None,
    types: str,
    since: str | None,
    full: bool,
    token_secret: str | None,
    requests_per_minute: int | None,
    poll_max: float | None,
    every: float | None,
    metrics_port: int | None,
    region: str | None,
    smart_client_id: str | None,
    smart_scope: str | None,
) -> None:
    """Run a FHIR Bulk Data $export (resumable) and publish its NDJSON as keyed records."""
    from ringback.config.secrets import read_secret
    from ringback.sources.ehr import bulk

    env = _env()
    auth = _smart_auth(base_url, smart_client_id, smart_scope)
    if auth is not None and token_secret:
        raise click.UsageError("--token-secret and SMART (--smart-client-id) exclude each other")
    if token_secret:
        token = read_secret(token_secret, env)
        if not token:
            raise click.ClickException(f"secret {token_secret!r} not found (env var or secrets dir)")
        auth = bulk.StaticBearer(token)
    if level == "group" and not group_id:
        raise click.UsageError("--level group needs --group ID")

    def export_once(first: bool):
        return bulk.run_export(
            env,
            base_url,
            practice_id,
            auth=auth,
            level=level,
            group_id=group_id,
            types=[t.strip() for t in types.split(",") if t.strip()],
            since=since if first else None,
            full=full and first,
            region=region,
            requests_per_minute=requests_per_minute,
            poll_max_s=poll_max,
        )

    if every is not None:
        from prometheus_client import start_http_server

        from ringback.sources.ehr import sync_loop as ehr_sync_loop

        bulk.declare_series()
        port = env.ringback_ehr_metrics_port if metrics_port is None else metrics_port
        if port:
            start_http_server(port)
        ehr_sync_loop.run_forever(
            export_once,
            every,
            report=_print_report_line,
            runs_counter=bulk.RUNS,
            last_success=bulk.LAST_SUCCESS,
            what="Bulk export",
        )
        return
    try:
        report = export_once(True)
    except (LookupError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(report)


@ehr.command("hl7")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="the MLLP port interface engines send to")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--practice", "practice_id", required=True, help="the practice every message of this feed is for")
@click.option(
    "--metrics-port", type=int, default=None, help="serve /metrics on this port (env RINGBACK_HL7_METRICS_PORT; 0: off)"
)
@_region_opt
def ehr_hl7(port: int, host: str, practice_id: str, metrics_port: int | None, region: str | None) -> None:
    """Listen for HL7 v2 SIU and ADT messages over MLLP (docs/ehr-hl7.md); ACK each once its records are on Kafka."""
    from ringback.sources.ehr.hl7 import listener

    env = _env()
    try:
        listener.run(
            env,
            practice_id,
            port,
            host=host,
            region=region,
            metrics_port=(env.ringback_hl7_metrics_port if metrics_port is None else metrics_port) or None,
        )
    except (LookupError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


# ---------------------------------------------------------------- KPI report
@main.command("report")
@click.option(
    "--since",
    default=None,
    help="first day (YYYY-MM-DD, 00:00 UTC) or ISO time of the missed calls; "
    "default: the beginning of the outcome topic",
)
@click.option("--until", default=None, help="end of the period, exclusive (default: now)")
@click.option("--practice", "practice_id", default=None, help="one practice id (default: every practice)")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the report as an HTML page with charts",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the numbers as JSON",
)
@click.option("--as-of", default=None, help="decide pending cases as of this time (default: now)")
@click.option(
    "--timeout", type=float, default=120.0, show_default=True, help="seconds to read the outcome topic to its end"
)
def report_cmd(
    since: str | None,
    until: str | None,
    practice_id: str | None,
    html_path: Path | None,
    json_path: Path | None,
    as_of: str | None,
    timeout: float,
) -> None:
    """The weekly KPI report (docs/report.md) from the outcome topic, per practice and in total."""
    from ringback.report import kpis, reader

    try:
        reader.run(
            _env(),
            since=since,
            until=until,
            practice_id=practice_id,
            html_path=html_path,
            json_path=json_path,
            as_of=as_of,
            timeout_s=timeout,
        )
    except kpis.ReportError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
