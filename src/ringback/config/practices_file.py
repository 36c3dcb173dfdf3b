"""The practices file (YAML): read, validated, with errors that name the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ringback.domain.practice import PracticesFile


class ConfigError(ValueError):
    """A practices file that cannot be used; the message names the field path."""


def parse_practices(data: Any) -> PracticesFile:
    try:
        return PracticesFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"]) or "(file)"
            lines.append(f"{path}: {err['msg']}")
        raise ConfigError("invalid practices file:\n  " + "\n  ".join(lines)) from None


def load_practices(path: str | Path) -> PracticesFile:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_practices(data)
