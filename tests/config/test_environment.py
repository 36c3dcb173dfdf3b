"""The environment: every variable a field of `Settings`, documented, read nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ringback.config import secrets
from ringback.config.secrets import read_secret
from ringback.config.settings import Settings, SettingsError, load_settings, variable
from tests.conftest import REPO

PACKAGE = REPO / "src" / "ringback"
DOC = REPO / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|", re.MULTILINE)
# Secrets read by name (config/secrets.py), documented on the same page.
SECRETS = {secrets.CONSOLE_SECRET, secrets.LOG_HASH_KEY, secrets.EHR_SMART_KEY, *secrets.KAFKA_SECRETS} | {
    name for _, name in secrets.PROVIDER_SECRETS.values()
}


def shown(default: object) -> str:
    """A default as the page shows it: the value one would write in the environment."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "`1`" if default else "`0`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def documented() -> dict[str, str]:
    rows = ROW.findall(DOC.read_text(encoding="utf-8"))
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a variable documented twice"
    return {name: default.strip() for name, default in rows}


# Defaults that depend on the machine (the per-user data folder), as the page words them.
MACHINE_DEFAULTS = {"RINGBACK_STATE_DIR": "`state` in the per-user data folder"}


def test_every_setting_is_documented_with_its_default_and_nothing_else_is():
    fields = {
        variable(name): MACHINE_DEFAULTS[variable(name)] if field.default_factory else shown(field.default)
        for name, field in Settings.model_fields.items()
    }
    doc = documented()
    assert sorted(set(fields) - set(doc)) == [], "document these in docs/configuration.md"
    assert sorted(set(doc) - set(fields) - SECRETS) == [], "not a setting nor a secret: remove from the page"
    assert {name: doc[name] for name in fields} == fields


def test_every_setting_has_a_description():
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("RINGBACK_PARTITIONS", "abc")
    monkeypatch.setenv("RINGBACK_SINKS_WEB", "perhaps")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("RINGBACK_PARTITIONS: ") and "; RINGBACK_SINKS_WEB: " in message


def test_the_command_stops_at_a_bad_value_with_that_line(monkeypatch):
    from ringback.cli import main

    result = CliRunner().invoke(main, ["config", "apply", "--dry-run", "x.yaml"], env={"RINGBACK_PARTITIONS": "abc"})
    assert result.exit_code == 1
    assert result.output.startswith("Error: environment: RINGBACK_PARTITIONS: Input should be a valid integer")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_values_are_typed_and_an_empty_variable_is_unset(monkeypatch):
    for name, value in {
        "RINGBACK_PARTITIONS": "4",
        "RINGBACK_WORKER_WEB": "0",
        "RINGBACK_GAP_GUARD": "off",
        "RINGBACK_LOG_FORMAT": "JSON",
        "RINGBACK_SINKS_CLOCK_FILE": "clock.txt",
        "RINGBACK_SINKS_STORE": "",
        "RINGBACK_SESSION_TIMEOUT_S": "",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.ringback_partitions == 4
    assert settings.ringback_worker_web is False and settings.ringback_gap_guard is False
    assert settings.ringback_log_format == "json"
    assert settings.ringback_sinks_clock_file == Path("clock.txt")
    assert settings.ringback_session_timeout_s == 10.0
    assert settings.ringback_sinks_store is None and settings.sinks_store == settings.ringback_store


def test_a_secret_comes_from_the_environment_else_the_secrets_dir(monkeypatch, tmp_path):
    settings = Settings(ringback_secrets_dir=tmp_path)
    monkeypatch.delenv("RB_TEST_SECRET", raising=False)
    assert read_secret("RB_TEST_SECRET", settings) is None
    (tmp_path / "RB_TEST_SECRET").write_text("from-file\n")
    assert read_secret("RB_TEST_SECRET", settings) == "from-file"
    monkeypatch.setenv("RB_TEST_SECRET", "from-env")
    assert read_secret("RB_TEST_SECRET", settings) == "from-env"


# ------------------------------------------------------------------ no other environment reads
# The developer tools build environments for the processes they start.
MAY_READ = ("ringback/config/", "ringback/dev/")


def _environment_reads(path: Path) -> list[int]:
    """Lines that touch os.environ / os.getenv / os.putenv (any spelling of the import)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv", "getenvb", "putenv"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "environb", "getenv", "getenvb", "putenv") for a in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_module_but_the_settings_reads_the_environment():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE.parent).as_posix()
        if name.startswith(MAY_READ):
            continue
        lines = _environment_reads(path)
        if lines:
            found[name] = lines
    assert found == {}, "read a field of ringback.config.settings.Settings instead"


def test_the_check_sees_every_spelling(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom os import getenv\n"
        "a = os.environ.get('X')\nb = os.getenv('Y')\nc = getenv('Z')\nd = dict(os.environ)\n"
    )
    assert _environment_reads(module) == [2, 3, 4, 6]


def test_local_state_defaults_to_the_per_user_data_folder_not_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("RINGBACK_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert load_settings().ringback_state_dir == tmp_path / "data" / "ringback" / "state"
    monkeypatch.setenv("RINGBACK_STATE_DIR", str(tmp_path / "elsewhere"))
    assert load_settings().ringback_state_dir == tmp_path / "elsewhere"
