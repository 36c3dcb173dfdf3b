"""Installed from a wheel (not editable), ringback works from an empty directory.

The wheel is built from a copy of the source (nothing is written into the checkout) and
installed into a fresh virtual environment that sees this environment's dependencies
(`--system-site-packages`, `--no-deps`: nothing is downloaded). Then, from an empty
directory, with HOME and the XDG folders pointed at temporary ones:

* only `ringback` is installed at top level: the old top-level packages are gone, and
  `import ringback` is the venv's copy, not the checkout's src/ (the editable install);
* `ringback --help`, `python -m ringback` and every command's --help work;
* `ringback kafka start/status/stop` run a broker from the POM and configuration packaged
  in the wheel, its folder in the per-user data folder;
* nothing was written into the venv (site-packages included) or the current directory.

It starts a broker of its own (no session broker needed): integration-marked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ringback.dev import local_kafka
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration

OLD_TOP_LEVEL_PACKAGES = ("streams", "schemas", "connectors")
BROKER_FILES = (
    "ringback/dev/kafka/pom.xml",
    "ringback/dev/kafka/server.properties.template",
    "ringback/dev/kafka/log4j2.properties",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline with this environment's setuptools from a copy of the source."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("ringback-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True, timeout=300)
    installed = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return root


@pytest.fixture
def user(tmp_path) -> dict[str, str]:
    """An environment without the checkout on the path, with its own HOME and XDG folders."""
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith(("RINGBACK_", "XDG_"))
    }
    env.update(
        {
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_STATE_HOME": str(home / "state"),
            # The jars the test session already has (no second Maven download); only read here.
            "RINGBACK_KAFKA_CACHE": str(local_kafka.cache_dir()),
            # Python's bytecode cache would be a write into site-packages that no command asked for.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_the_wheel_holds_ringback_only_with_its_package_data(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert archive.read(f"{dist_info}/top_level.txt").decode().split() == ["ringback"]
    assert {n.split("/")[0] for n in names} == {"ringback", dist_info}
    assert set(BROKER_FILES) <= set(names)
    assert any(n.startswith("ringback/schemas/") and n.endswith(".avsc") for n in names)
    assert any(n.startswith("ringback/console/static/") for n in names)
    assert "ringback/__main__.py" in names


def test_installed_it_runs_from_an_empty_directory(venv, user, tmp_path):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    python, ringback = str(venv / "bin" / "python"), str(venv / "bin" / "ringback")
    before = _files(venv)

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=cwd, env=user, capture_output=True, text=True, timeout=timeout)

    for old in OLD_TOP_LEVEL_PACKAGES:
        imported = run(python, "-c", f"import {old}")
        assert imported.returncode != 0 and "ModuleNotFoundError" in imported.stderr, (old, imported.stdout)
    where = run(python, "-c", "import ringback; print(ringback.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout

    assert run(ringback, "--help").returncode == 0
    as_module = run(python, "-m", "ringback", "--help")
    assert as_module.returncode == 0 and "Usage: ringback" in as_module.stdout, as_module.stderr
    # Every command and subcommand answers --help (each a click command of the installed cli).
    every_help = run(
        python,
        "-c",
        "from click.testing import CliRunner\n"
        "import click\n"
        "from ringback.cli import main\n"
        "def walk(cmd, path):\n"
        "    yield path\n"
        "    if isinstance(cmd, click.Group):\n"
        "        for name, sub in cmd.commands.items():\n"
        "            yield from walk(sub, [*path, name])\n"
        "runner = CliRunner()\n"
        "for path in walk(main, []):\n"
        "    result = runner.invoke(main, [*path, '--help'])\n"
        "    assert result.exit_code == 0, (path, result.output, result.exception)\n"
        "    print(' '.join(path) or '(main)')\n",
    )
    assert every_help.returncode == 0, every_help.stderr
    for command in ("kafka start", "kafka status", "kafka stop", "demo", "bench", "worker"):
        assert command in every_help.stdout.splitlines(), every_help.stdout

    port = str(free_port())
    home = Path(user["XDG_DATA_HOME"]) / "ringback" / "kafka" / port
    try:
        started = run(ringback, "kafka", "start", "--port", port, timeout=240)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"127.0.0.1:{port}" in started.stdout and str(home) in started.stdout, started.stdout
        status = run(ringback, "kafka", "status", "--port", port)
        assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr
    finally:
        stopped = run(ringback, "kafka", "stop", "--port", port)
    assert stopped.returncode == 0 and "kafka stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert run(ringback, "kafka", "status", "--port", port).returncode == 1

    # The broker's folder: its configuration from the packaged files, its data and logs.
    assert "log.dirs=" in (home / "server.properties").read_text()
    assert (home / "log4j2.properties").read_text() == (
        REPO / "src" / "ringback" / "dev" / "kafka" / "log4j2.properties"
    ).read_text()
    assert (home / "data" / "meta.properties").exists() and (home / "logs" / "server.log").exists()
    assert list(cwd.iterdir()) == []
    assert _files(venv) == before
