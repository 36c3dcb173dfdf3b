"""Static checks of the deployment files: docker-compose.yml, the Dockerfile,
deploy/prometheus, deploy/grafana and deploy/k8s.

No Docker engine is needed: the files are parsed and every cross-reference
between them (paths, service names, ports, variables, metric expressions) is
checked against the repository. The Prometheus checks run Debian's `promtool`
(package `prometheus`); it must be installed, these tests fail without it.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PROM_DIR = REPO / "deploy" / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
PROM_RULES = PROM_DIR / "alerts.yml"
PROM_RULES_TEST = PROM_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "ringback.json"
K8S_DIR = REPO / "deploy" / "k8s"

# Variables the user must supply (environment or .env): compose refuses to
# start without them (`${VAR:?message}`). Any other ${VAR} needs a default.
REQUIRED_USER_VARS = {
    "TWILIO_ACCOUNT_SID": "Twilio account SID (starts with AC)",
    "TWILIO_AUTH_TOKEN": "Twilio auth token",
}
# Environment entries without a value: handed to the container only when set
# on the host (compose semantics for `VAR:` / `- VAR`).
OPTIONAL_PASSTHROUGH_VARS = {
    "TWILIO_API_BASE_URL",
    "SCHEMA_REGISTRY_URL",
    "RINGBACK_PUBLIC_URL",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
}

EXPECTED_SERVICES = {
    "kafka",
    "config",
    "gateway",
    "worker-1",
    "worker-2",
    "sinks",
    "prometheus",
    "grafana",
}
RINGBACK_SUBCOMMANDS = {"ingest", "worker", "sinks", "config"}
# Port each ringback role serves /metrics on, and the variable that changes it.
METRICS_PORTS = {
    "ingest": ("RINGBACK_GATEWAY_PORT", 8080),
    "worker": ("RINGBACK_WORKER_WEB_PORT", 6066),
    "sinks": ("RINGBACK_SINKS_METRICS_PORT", 9102),
}
SECRET_KEY_RE = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|_SID$|API_KEY|PRIVATE_KEY)", re.I)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, ${VAR:+x}; $$ escapes.
INTERP_RE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
BARE_VAR_RE = re.compile(r"(?<!\$)\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


# --------------------------------------------------------------------------- helpers


def _load_yaml(path: Path):
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict:
    data = _load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        "docker-compose.yml has no services mapping"
    )
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _ringback_services(services: dict) -> dict:
    """Services built from the repository's Dockerfile (the ringback image)."""
    return {name: svc for name, svc in services.items() if "build" in svc}


def _build_context(svc: dict) -> tuple[Path, Path]:
    build = svc["build"]
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    ctx = (COMPOSE_FILE.parent / context).resolve()
    return ctx, (ctx / dockerfile).resolve()


def _substitute_defaults(text: str) -> str:
    """Interpolate ${VAR:-default} as compose would with VAR unset."""

    def repl(m: re.Match) -> str:
        if m.group("op") in (":-", "-"):
            return m.group("arg")
        return m.group(0)

    return INTERP_RE.sub(repl, text)


def _command_args(svc: dict) -> list[str]:
    cmd = svc.get("command")
    if cmd is None:
        return []
    if isinstance(cmd, str):
        return cmd.split()
    return [str(a) for a in cmd]


def _environment(svc: dict) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def _mounts(svc: dict) -> list[dict]:
    """Volumes of a service as dicts: type, source, target (short and long syntax)."""
    out = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            out.append(
                {
                    "type": vol.get("type", "volume"),
                    "source": vol.get("source"),
                    "target": vol["target"],
                }
            )
            continue
        parts = _substitute_defaults(str(vol)).split(":")
        if len(parts) == 1:  # anonymous volume
            out.append({"type": "volume", "source": None, "target": parts[0]})
            continue
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append({"type": kind, "source": source, "target": target})
    return out


def _bind_source(mount: dict) -> Path:
    return (COMPOSE_FILE.parent / _substitute_defaults(mount["source"])).resolve()


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instr, _, rest = current.partition(" ")
        lines.append((instr.upper(), rest.strip()))
        current = ""
    return lines


def _dockerfile_copies(path: Path) -> list[tuple[list[str], str]]:
    """(sources relative to the build context, absolute destination) of each
    COPY/ADD from the context (not --from another stage)."""
    copies, workdir = [], "/"
    for instr, rest in _dockerfile_instructions(path):
        if instr == "FROM":
            copies, workdir = [], "/"  # only the final stage matters
        elif instr == "WORKDIR":
            workdir = posixpath.join(workdir, rest)
        elif instr in ("COPY", "ADD"):
            if rest.startswith("["):
                args = json.loads(rest)
            else:
                args = rest.split()
            if any(a.startswith("--from") for a in args):
                continue
            args = [a for a in args if not a.startswith("--")]
            *sources, dest = args
            dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
            if dest.endswith("/") or dest in (".", "./"):
                dest_abs += "/"
            copies.append((sources, dest_abs))
    return copies


def _resolve_container_path(service: str, svc: dict, container_path: str) -> Path | None:
    """Where a path inside a ringback container comes from in the repository:
    a bind mount of the service first (it hides the image), else a COPY."""
    best = None
    for mount in _mounts(svc):
        if mount["type"] != "bind":
            continue
        target = mount["target"].rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            if best is None or len(target) > len(best[0]):
                best = (target, _bind_source(mount))
    if best is not None:
        target, source = best
        return source / posixpath.relpath(container_path, target) if container_path != target else source
    if "build" not in svc:
        return None
    ctx, dockerfile = _build_context(svc)
    for sources, dest in reversed(_dockerfile_copies(dockerfile)):
        for src in sources:
            src_path = ctx / src
            if dest.endswith("/"):
                base = dest.rstrip("/")
                if src_path.is_dir() or src.endswith("/"):
                    # COPY dir/ dest/ copies the contents of dir into dest.
                    if container_path == base or container_path.startswith(base + "/"):
                        rel = posixpath.relpath(container_path, base)
                        return (src_path / rel) if rel != "." else src_path
                elif container_path == posixpath.join(base, PurePosixPath(src).name):
                    return src_path
            elif container_path == dest or container_path.startswith(dest + "/"):
                rel = posixpath.relpath(container_path, dest)
                return (src_path / rel) if rel != "." else src_path
    return None


def _walk_strings(node, path="$"):
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}.{k}", str(k)
            yield from _walk_strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _role(svc: dict) -> str | None:
    args = _command_args(svc)
    return args[0] if args else None


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not on PATH: install the Debian package `prometheus` "
            "(apt-get update && apt-get install -y --no-install-recommends prometheus); "
            "it provides /usr/bin/promtool, used to check deploy/prometheus/*.yml"
        )
    return exe


def _run_promtool(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([_promtool(), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"promtool {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


# --------------------------------------------------------------------------- compose


def test_compose_has_the_expected_services(services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"
    for name in ("config", "gateway", "worker-1", "worker-2", "sinks"):
        assert "build" in services[name], f"service {name} must build the ringback image"


def test_build_contexts_and_dockerfiles_exist(services):
    for name, svc in _ringback_services(services).items():
        ctx, dockerfile = _build_context(svc)
        assert ctx.is_dir(), f"service {name}: build context {ctx} does not exist"
        assert dockerfile.is_file(), f"service {name}: Dockerfile {dockerfile} does not exist"


def test_dockerfile_basics():
    instructions = _dockerfile_instructions(DOCKERFILE)
    froms = [rest for instr, rest in instructions if instr == "FROM"]
    assert froms and froms[-1].split()[0].startswith("python:3.11-slim"), froms
    users = [rest for instr, rest in instructions if instr == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as non-root"
    entrypoints = [rest for instr, rest in instructions if instr == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["ringback"], entrypoints
    runs = " ".join(rest for instr, rest in instructions if instr == "RUN")
    assert re.search(r"pip install[^&;]*\s\.(\s|$)", runs), "the image must `pip install .`"


def test_dockerfile_copy_sources_exist_and_are_not_dockerignored():
    ignore = []
    if DOCKERIGNORE.is_file():
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#") and not line.startswith("!"):
                ignore.append(line.rstrip("/").lstrip("/"))
    problems = []
    for sources, _dest in _dockerfile_copies(DOCKERFILE):
        for src in sources:
            rel = posixpath.normpath(src)
            if not (REPO / rel).exists():
                problems.append(
                    f"COPY source {src!r} does not exist in the repository (`docker build` would fail at this COPY)"
                )
            for pattern in ignore:
                if fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
                    problems.append(f"COPY source {src!r} is excluded by .dockerignore ({pattern!r})")
    assert not problems, "Dockerfile:\n" + "\n".join(problems)


def test_dockerfile_installs_every_package_pyproject_declares():
    """`pip install .` inside the image needs every package dir and the readme."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    where = re.search(r"where\s*=\s*\[([^\]]*)\]", text)
    assert where, "pyproject.toml: [tool.setuptools.packages.find] where not found"
    roots = {p.strip().strip("\"'") for p in where.group(1).split(",") if p.strip()}
    copied = {posixpath.normpath(src) for sources, _ in _dockerfile_copies(DOCKERFILE) for src in sources}
    missing = sorted(p for p in roots if p not in copied)
    assert not missing, f"Dockerfile does not COPY the package roots {missing} that pyproject.toml installs from"
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', text, re.M)
    if readme:
        assert readme.group(1) in copied, f"Dockerfile must COPY {readme.group(1)} (pyproject readme)"


def test_bind_mount_sources_exist_and_named_volumes_are_declared(compose, services):
    declared = set((compose.get("volumes") or {}).keys())
    problems = []
    for name, svc in services.items():
        for mount in _mounts(svc):
            if mount["type"] == "bind":
                source = mount["source"]
                if not source.startswith("."):
                    problems.append(f"{name}: bind mount {source!r} is not relative to the repo")
                    continue
                path = _bind_source(mount)
                if not path.exists():
                    problems.append(f"{name}: bind mount source {source!r} -> {path} does not exist in the repo")
            elif mount["source"] and mount["source"] not in declared:
                problems.append(f"{name}: named volume {mount['source']!r} is not declared under volumes:")
    assert not problems, "docker-compose.yml volumes:\n" + "\n".join(problems)


def test_app_paths_in_commands_and_environment_exist_in_the_repo(services):
    """Paths under /app that a ringback container reads (command arguments,
    RINGBACK_CONFIG) must come from the repository via a bind mount or a COPY."""
    problems = []
    for name, svc in _ringback_services(services).items():
        candidates = [("command", a) for a in _command_args(svc) if a.startswith("/app/")]
        candidates += [(f"environment {k}", v) for k, v in _environment(svc).items() if v and v.startswith("/app/")]
        for where, container_path in candidates:
            host = _resolve_container_path(name, svc, container_path)
            if host is None:
                problems.append(
                    f"{name}: {where} uses {container_path}, which no bind mount or Dockerfile COPY provides"
                )
            elif not host.exists():
                problems.append(
                    f"{name}: {where} uses {container_path}, which maps to "
                    f"{host.relative_to(REPO) if host.is_relative_to(REPO) else host} "
                    f"- that file is not in the repository (add it, or fix the path)"
                )
    assert not problems, "\n".join(problems)


def test_config_service_applies_the_example_practices_file(services):
    args = _command_args(services["config"])
    assert args[:2] == ["config", "apply"] and len(args) == 3, args
    host = _resolve_container_path("config", services["config"], args[2])
    assert host == REPO / "examples" / "practices.yaml", host
    assert host.is_file(), (
        "examples/practices.yaml is missing: the compose `config` service runs "
        "`ringback config apply /app/examples/practices.yaml` and the Dockerfile copies examples/"
    )
    deps = services["config"].get("depends_on") or {}
    assert isinstance(deps, dict) and deps.get("kafka", {}).get("condition") == "service_healthy", (
        "config must wait for kafka to be healthy"
    )
    assert str(services["config"].get("restart", "no")) == "no", "config is a one-shot job"


def test_interpolated_variables_have_defaults_or_are_required_user_vars(compose):
    problems = []
    required_seen: set[str] = set()
    for where, text in _walk_strings(compose):
        for m in INTERP_RE.finditer(text):
            var, op = m.group("name"), m.group("op")
            if op in (":-", "-"):
                continue
            if var in REQUIRED_USER_VARS:
                required_seen.add(var)
                if op not in (":?", "?"):
                    problems.append(
                        f"{where}: required variable {var} must use ${{{var}:?message}} so that "
                        f"compose stops with a clear error when it is not set"
                    )
                continue
            problems.append(
                f"{where}: ${{{var}}} has no default; give it one (${{{var}:-value}}) or add "
                f"it to REQUIRED_USER_VARS in this test (and document it)"
            )
        for m in BARE_VAR_RE.finditer(INTERP_RE.sub("", text)):
            problems.append(f"{where}: use ${{{m.group('name')}:-default}} instead of ${m.group('name')}")
    unused = set(REQUIRED_USER_VARS) - required_seen
    if unused:
        problems.append(f"REQUIRED_USER_VARS lists variables docker-compose.yml does not use: {sorted(unused)}")
    assert not problems, "\n".join(problems)


def test_no_secret_values_are_hard_coded(services):
    problems = []
    for name, svc in services.items():
        for key, value in _environment(svc).items():
            if value is None:
                if key not in OPTIONAL_PASSTHROUGH_VARS:
                    problems.append(f"{name}: {key} has no value; list it in OPTIONAL_PASSTHROUGH_VARS")
                continue
            if key.endswith(("_DIR", "_FILE", "_PATH")):
                continue  # where secrets are read from, not a secret
            if SECRET_KEY_RE.search(key) and not INTERP_RE.search(value):
                problems.append(f"{name}: {key} is a literal; take it from the environment (${{{key}:?...}})")
    assert not problems, "\n".join(problems)


def test_every_ringback_service_sets_kafka_bootstrap_servers(services):
    for name, svc in _ringback_services(services).items():
        env = _environment(svc)
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS")
        assert bootstrap, f"service {name} does not set KAFKA_BOOTSTRAP_SERVERS"
        for server in _substitute_defaults(bootstrap).split(","):
            host = server.strip().rsplit(":", 1)[0]
            assert host in services, f"service {name}: KAFKA_BOOTSTRAP_SERVERS host {host!r} is not a compose service"
        assert env.get("RINGBACK_CONFIG"), f"service {name} does not set RINGBACK_CONFIG"
        for var in REQUIRED_USER_VARS:
            assert env.get(var), f"service {name} does not pass {var}"
        assert _role(svc) in RINGBACK_SUBCOMMANDS, (
            f"service {name}: command {_command_args(svc)} is not a ringback subcommand"
        )
        deps = svc.get("depends_on") or {}
        assert "kafka" in deps, f"service {name} must depend on kafka"


def test_depends_on_names_existing_services(services):
    for name, svc in services.items():
        for dep in svc.get("depends_on") or []:
            assert dep in services, f"service {name} depends on unknown service {dep!r}"


def test_workers_have_distinct_state_volumes(services):
    workers = {n: s for n, s in services.items() if _role(s) == "worker"}
    assert set(workers) >= {"worker-1", "worker-2"}, sorted(workers)
    sources = {}
    for name, svc in workers.items():
        state_dir = _environment(svc).get("RINGBACK_STATE_DIR")
        assert state_dir == "/var/lib/ringback", (
            f"{name}: RINGBACK_STATE_DIR must be /var/lib/ringback (the volume), not {state_dir!r}"
        )
        state = [m for m in _mounts(svc) if m["target"].rstrip("/") == state_dir]
        assert state, f"{name} has no volume at {state_dir} for its RocksDB state"
        assert state[0]["type"] == "volume", f"{name}: state should be a named volume"
        sources[name] = state[0]["source"]
    assert len(set(sources.values())) == len(sources), f"workers share a state volume: {sources}"


def test_kafka_is_single_node_kraft(services):
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:4."), kafka["image"]
    env = _environment(kafka)
    assert env.get("KAFKA_PROCESS_ROLES") == "broker,controller"
    assert env.get("KAFKA_NODE_ID")
    listeners = env.get("KAFKA_LISTENERS", "")
    assert "PLAINTEXT://:9092" in listeners and "CONTROLLER://:9093" in listeners, listeners
    advertised = env.get("KAFKA_ADVERTISED_LISTENERS", "")
    assert "PLAINTEXT://kafka:9092" in advertised, advertised
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ):
        assert env.get(key) == "1", f"kafka: {key} must be 1 on a single node"
    assert kafka.get("healthcheck", {}).get("test"), "kafka needs a healthcheck"


# --------------------------------------------------------------------------- prometheus


@pytest.fixture(scope="module")
def prom_config() -> dict:
    return _load_yaml(PROM_CONFIG)


def test_prometheus_scrape_targets_are_compose_services(services, prom_config):
    targets = []
    for job in prom_config.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            targets += [(job["job_name"], t) for t in static.get("targets") or []]
    assert targets, "prometheus.yml has no scrape targets"
    problems = []
    scraped = set()
    for job, target in targets:
        host, _, port = target.rpartition(":")
        if host == "localhost":
            continue
        if host not in services:
            problems.append(f"job {job}: target {target} names no compose service")
            continue
        scraped.add(host)
        svc = services[host]
        role = _role(svc) if "build" in svc else None
        if role in METRICS_PORTS:
            var, default = METRICS_PORTS[role]
            expected = int(_environment(svc).get(var) or default) if var else default
            if int(port) != expected:
                problems.append(f"job {job}: {target} but {host} serves metrics on {expected}")
    for name, svc in _ringback_services(services).items():
        if _role(svc) in METRICS_PORTS and name not in scraped:
            problems.append(f"service {name} ({_role(svc)}) is not scraped by prometheus.yml")
    assert not problems, "\n".join(problems)


def test_prometheus_rule_files_exist_and_are_mounted(services, prom_config):
    rule_files = prom_config.get("rule_files") or []
    assert "alerts.yml" in rule_files, rule_files
    mounts = {m["target"]: m for m in _mounts(services["prometheus"]) if m["type"] == "bind"}
    config_target = next((t for t, m in mounts.items() if _bind_source(m) == PROM_CONFIG.resolve()), None)
    assert config_target, "compose does not mount deploy/prometheus/prometheus.yml into prometheus"
    for rule in rule_files:
        host = PROM_DIR / rule
        assert host.is_file(), f"prometheus.yml rule file {rule} is missing from deploy/prometheus/"
        target = posixpath.join(posixpath.dirname(config_target), rule)
        assert target in mounts and _bind_source(mounts[target]) == host.resolve(), (
            f"compose must mount deploy/prometheus/{rule} at {target} (beside the config)"
        )


def test_alert_rules_have_the_expected_alerts_with_labels_and_annotations():
    rules = _load_yaml(PROM_RULES)
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    expected = {
        "FirstResponseSlaBreach": "ringback_first_response_latency_seconds_bucket",
        "GatewayErrors": "ringback_gateway_requests_total",
        "DeadLetters": "ringback_dead_letters_total",
        "TimersOverdue": "ringback_timers_overdue_seconds",
        "SinkErrorRate": "ringback_sink_actions_total",
    }
    assert set(expected) <= set(alerts), f"missing alerts: {set(expected) - set(alerts)}"
    for name, metric in expected.items():
        rule = alerts[name]
        assert metric in rule["expr"], f"{name} does not use {metric}"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), name
    tests = _load_yaml(PROM_RULES_TEST)
    tested = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test") or []}
    assert set(alerts) <= tested, f"alerts without a promtool test: {set(alerts) - tested}"


def test_promtool_check_config_and_rules():
    _run_promtool("check", "config", str(PROM_CONFIG.relative_to(REPO)))
    _run_promtool("check", "rules", str(PROM_RULES.relative_to(REPO)))


def test_promtool_test_rules():
    proc = _run_promtool("test", "rules", str(PROM_RULES_TEST.relative_to(REPO)))
    assert "SUCCESS" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- grafana


def _panels(dashboard: dict):
    for panel in dashboard.get("panels") or []:
        if panel.get("type") == "row":
            yield from panel.get("panels") or []
        else:
            yield panel


@pytest.fixture(scope="module")
def dashboard() -> dict:
    assert DASHBOARD.is_file(), f"{DASHBOARD.relative_to(REPO)} is missing"
    try:
        return json.loads(DASHBOARD.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"{DASHBOARD.relative_to(REPO)} is not valid JSON: {exc}")


def test_grafana_dashboard_panels_all_have_queries(dashboard):
    panels = list(_panels(dashboard))
    assert len(panels) >= 6, f"expected at least 6 panels, found {len(panels)}"
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets, f"panel {panel.get('title')!r} has no targets"
        for target in targets:
            assert str(target.get("expr", "")).strip(), (
                f"panel {panel.get('title')!r} target {target.get('refId')} has no expr"
            )
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needle in (
        'ringback_call_events_total{outcome="MISSED"}',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "ringback_first_response_latency_seconds_bucket",
        "ringback_sink_actions_total",
        "ringback_dead_letters_total",
        "ringback_timers_overdue_seconds",
        "ringback_gateway_requests_total",
    ):
        assert needle in exprs, f"no dashboard panel queries {needle}"


def test_grafana_dashboard_queries_are_valid_promql(dashboard, tmp_path):
    """Each panel expression, with Grafana's variables replaced, as a recording
    rule: `promtool check rules` parses it."""
    rules = []
    for i, panel in enumerate(_panels(dashboard)):
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h")):
                expr = expr.replace(var, value)
            rules.append({"record": f"dashboard:panel{i}:{target['refId']}", "expr": expr})
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run_promtool("check", "rules", str(rules_file))


def test_grafana_provisioning_matches_compose_mounts(services):
    grafana = services["grafana"]
    mounts = {m["target"].rstrip("/"): _bind_source(m) for m in _mounts(grafana) if m["type"] == "bind"}
    assert mounts.get("/etc/grafana/provisioning") == (GRAFANA_DIR / "provisioning").resolve(), mounts
    datasources = _load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    for ds in datasources["datasources"]:
        host = re.match(r"https?://([^:/]+)", ds["url"]).group(1)
        assert host in services, f"Grafana datasource {ds['name']} points at unknown host {host}"
    providers = _load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "ringback.yml")
    for provider in providers["providers"]:
        path = provider["options"]["path"].rstrip("/")
        assert mounts.get(path) == DASHBOARD.parent.resolve(), (
            f"dashboard provider path {path} is not the mount of deploy/grafana/dashboards"
        )


# --------------------------------------------------------------------------- k8s


def _k8s_docs() -> dict[str, list[dict]]:
    files = sorted(K8S_DIR.glob("*.yaml")) + sorted(K8S_DIR.glob("*.yml"))
    assert files, "deploy/k8s has no YAML files"
    out = {}
    for path in files:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.relative_to(REPO)} does not parse: {exc}")
        out[path.name] = docs
    return out


def test_k8s_yaml_parses_and_kustomization_resources_exist():
    docs = _k8s_docs()
    assert "kustomization.yaml" in docs, "deploy/k8s/kustomization.yaml is missing"
    kustomization = docs["kustomization.yaml"][0]
    for resource in kustomization["resources"]:
        assert (K8S_DIR / resource).is_file(), f"kustomization resource {resource} is missing"
    for name, file_docs in docs.items():
        if name == "kustomization.yaml":
            continue
        for doc in file_docs:
            for key in ("apiVersion", "kind"):
                assert doc.get(key), f"{name}: a document has no {key}"
            assert doc.get("metadata", {}).get("name"), f"{name}: a {doc['kind']} has no name"
    listed = set(kustomization["resources"])
    unlisted = {n for n in docs if n != "kustomization.yaml"} - listed
    assert not unlisted, f"deploy/k8s files not listed in kustomization resources: {unlisted}"


def test_k8s_workloads():
    objects = {
        (d["kind"], d["metadata"]["name"]): d
        for docs in _k8s_docs().values()
        for d in docs
        if d.get("kind") and d["kind"] != "Kustomization"
    }
    kinds = {k for k, _ in objects}
    assert "Secret" not in kinds, "deploy/k8s must only reference Secrets, never carry their values"
    gateway = objects.get(("Deployment", "ringback-gateway"))
    worker = objects.get(("StatefulSet", "ringback-worker"))
    sinks = objects.get(("Deployment", "ringback-sinks"))
    assert gateway and gateway["spec"]["replicas"] == 2, "gateway Deployment with 2 replicas"
    assert worker and worker["spec"]["replicas"] == 2, "worker StatefulSet with 2 replicas"
    assert sinks and sinks["spec"]["replicas"] == 2, "sinks Deployment with 2 replicas"
    claims = {c["metadata"]["name"] for c in worker["spec"].get("volumeClaimTemplates") or []}
    assert claims, "the worker StatefulSet needs a volumeClaimTemplate for RocksDB"
    assert ("Service", "ringback-gateway") in objects, "a Service for the gateway"
    configmaps = {n: o for (k, n), o in objects.items() if k == "ConfigMap"}
    env_keys = {key for cm in configmaps.values() for key in (cm.get("data") or {})}
    for workload, role in ((gateway, "ingest"), (worker, "worker"), (sinks, "sinks")):
        pod = workload["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container.get("args", [None])[0] == role, container.get("args")
        env_names = {e["name"] for e in container.get("env") or []}
        for ref in container.get("envFrom") or []:
            cm = ref.get("configMapRef", {}).get("name")
            assert cm in configmaps, f"{workload['metadata']['name']}: envFrom unknown ConfigMap {cm}"
            env_names |= set(configmaps[cm].get("data") or {})
        for var in ("KAFKA_BOOTSTRAP_SERVERS", "RINGBACK_CONFIG", *REQUIRED_USER_VARS):
            assert var in env_names, f"{workload['metadata']['name']} does not set {var}"
        for e in container.get("env") or []:
            if e["name"] in REQUIRED_USER_VARS:
                assert "secretKeyRef" in e.get("valueFrom", {}), f"{e['name']} must come from a Secret"
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        names = {v.get("configMap", {}).get("name") for v in volumes.values()}
        assert "ringback-practices" in names, f"{workload['metadata']['name']} does not mount the practices"
        if workload is worker:
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            state_dirs = {cm.get("data", {}).get("RINGBACK_STATE_DIR") for cm in configmaps.values()}
            assert "/var/lib/ringback" in state_dirs, "RINGBACK_STATE_DIR must be /var/lib/ringback"
            assert any(mounts.get(c) == "/var/lib/ringback" for c in claims), (
                f"the worker's volumeClaimTemplate must be mounted at RINGBACK_STATE_DIR: {mounts}"
            )
    assert "practices.yaml" in (configmaps.get("ringback-practices", {}).get("data") or {}), (
        "ConfigMap ringback-practices must hold practices.yaml"
    )
    assert env_keys, "no ConfigMap data"
