"""Where ringback keeps what it writes when not told where: per-user folders.

An installed ringback must never write into site-packages or a source tree, nor litter
the current directory. Data (a process's local state, the default of RINGBACK_STATE_DIR;
broker data and logs, demo runs, bench results) goes under the per-user data folder; what
can be downloaded again (the broker's Maven jars) under the per-user cache folder.
platformdirs knows each platform's rules (on Linux the XDG base directories:
$XDG_DATA_HOME, else ~/.local/share; $XDG_CACHE_HOME, else ~/.cache).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from platformdirs import user_cache_path, user_data_path

APP = "ringback"


def data_path(*parts: str) -> Path:
    """A folder under the per-user data folder, e.g. ~/.local/share/ringback/demo."""
    return user_data_path(APP, appauthor=False).joinpath(*parts)


def cache_path(*parts: str) -> Path:
    """A folder under the per-user cache folder, e.g. ~/.cache/ringback/kafka."""
    return user_cache_path(APP, appauthor=False).joinpath(*parts)


def run_name() -> str:
    """A folder name for one run of a tool: its start time, and the pid against collisions."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
