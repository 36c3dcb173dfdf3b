"""`ringback gvoice watch` as a process of the test, on the real broker and the test's IMAP server."""

from __future__ import annotations

import json

from ringback.dev.imap_server import PASSWORD, USER, ImapServer
from tests.conftest import REPO, wait_for
from tests.sources.topic_records import read_topic

PRACTICES = REPO / "tests" / "fixtures" / "practices.yaml"  # maple-family: (312) 555-0100, no hold


def apply_practices(processes, env: dict | None = None) -> None:
    applied = processes.run("config", "apply", str(PRACTICES), env=env)
    assert applied.returncode == 0, applied.stderr


def store_password(service_env: dict) -> None:
    """The mailbox password as an operator stores it: a file in the secrets directory."""
    from pathlib import Path

    secrets = Path(service_env["RINGBACK_SECRETS_DIR"])
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "GVOICE_IMAP_PASSWORD").write_text(PASSWORD + "\n")


def log_since(processes, name: str, offset: int) -> str:
    path = processes.log_dir / f"{name}.log"
    return processes.log(name)[offset:] if path.exists() else ""


def start_watcher(processes, server: ImapServer, name: str = "gvoice", env: dict | None = None, *args: str):
    path = processes.log_dir / f"{name}.log"
    offset = len(processes.log(name)) if path.exists() else 0
    proc = processes.start(
        name,
        "gvoice",
        "watch",
        "--practice",
        "maple-family",
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--user",
        USER,
        "--ca-file",
        str(server.ca_file),
        *args,
        env=env,
    )
    wait_for(
        lambda: "gvoice watcher ready" in log_since(processes, name, offset) or proc.poll() is not None,
        60,
        message=f"{name} ready",
    )
    assert proc.poll() is None, log_since(processes, name, offset)
    return proc


def checkpoint(bootstrap: str, ns: str) -> dict | None:
    latest = None
    for r in read_topic(bootstrap, f"{ns}.gvoice-checkpoints"):
        latest = json.loads(r["value"])
    return latest
