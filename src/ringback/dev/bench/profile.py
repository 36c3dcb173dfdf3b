"""Sampling profiles of a running worker with py-spy (`ringback bench --profile`).

py-spy attaches to the process from outside (no code change, little overhead with
`--nonblocking`) and writes collapsed stacks ("frame;frame;frame count" per line),
which `top` turns into the functions that take the time. py-spy is a PyPI package
with its own binary (`pip install py-spy`); without it the profile is skipped.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path


def available() -> bool:
    return shutil.which("py-spy") is not None


class Recording:
    def __init__(self, pid: int, raw_path: Path, rate: int = 100) -> None:
        self.raw_path = raw_path
        self.svg_path = raw_path.with_suffix(".svg")
        self._proc = subprocess.Popen(
            [
                shutil.which("py-spy") or "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(raw_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> Path | None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self.raw_path if self.raw_path.exists() else None


_LOCATION = re.compile(r"\s*\((.*?):\d+\)$")


def frame_name(frame: str) -> str:
    """'handle (.../src/ringback/worker/topology.py:244)' → 'handle (ringback/worker/topology.py)'
    (lines merged)."""
    return _LOCATION.sub(lambda m: f" ({_short(m.group(1))})", frame.strip())


_STDLIB = re.compile(r"/lib/python3\.\d+/")


def _short(path: str) -> str:
    """A path from the package or module name on: ringback/..., faust/..., asyncio/..."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/ringback/" in path:
        return "ringback/" + path.rsplit("/ringback/", 1)[1]
    m = _STDLIB.search(path)
    return path[m.end() :] if m else path


def top(collapsed: str, n: int = 25) -> dict:
    """The functions with the most samples: `self` (the leaf frame: running there) and
    `total` (anywhere on the stack), as shares of all samples. Idle samples (py-spy's
    `--idle` off leaves them out already) are not special-cased."""
    self_counts: Counter = Counter()
    total_counts: Counter = Counter()
    samples = 0
    for line in collapsed.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            k = int(count)
        except ValueError:
            continue
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += k
        self_counts[frames[-1]] += k
        for name in set(frames):
            total_counts[name] += k
    if not samples:
        return {"samples": 0, "self": [], "total": []}
    return {
        "samples": samples,
        "self": [(name, c / samples) for name, c in self_counts.most_common(n)],
        "total": [(name, c / samples) for name, c in total_counts.most_common(n)],
    }


def by_module(collapsed: str) -> list[tuple[str, float]]:
    """Self time by the package of the leaf frame (faust, aiokafka, asyncio, ...; ringback's
    own by subpackage: ringback.worker, ringback.schemas, ...)."""
    counts: Counter = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.strip().rpartition(" ")
        if not stack:
            continue
        try:
            k = int(count)
        except ValueError:
            continue
        m = _LOCATION.search(stack.split(";")[-1])
        path = _short(m.group(1)) if m else "?"
        parts = path.split("/")
        package = ".".join(parts[:2]) if parts[0] == "ringback" and len(parts) > 2 else parts[0]
        counts[package] += k
        samples += k
    return [(p, c / samples) for p, c in counts.most_common()] if samples else []
