"""Prism (`@stoplight/prism-cli`, installed by `npm ci` at the repo root) serving
Twilio's official OpenAPI description of the 2010 API, with request validation on.

Prism answers a valid request with the spec's example (201 for a message create, a
fixed body that does not echo the input) and a request the contract rejects with a
4xx in its own error format (422 missing `To`, 401 without auth, 415 for JSON...).
It does not check "From or MessagingServiceSid" or a Body: the sink does.

`PrismMock.requests()` lists what Prism received (method, path, status) from its
log, and `rejected()` every request it refused; tests call `assert_all_valid()`.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRISM_BIN = REPO / "node_modules" / ".bin" / "prism"
TWILIO_SPEC = REPO / "tests" / "vendor" / "twilio" / "twilio_api_v2010.json"

_REQUEST = re.compile(r"\[HTTP SERVER\] (\w+) (\S+) .*Request received")
_STATUS = re.compile(r'> Responding with "(\d{3})"')
_REJECT = re.compile(
    r"Request did not pass the validation rules|Request terminated with error|"
    r"\[VALIDATOR\] \S+\s+error\s+(?!\s|Violation: response)"
)


@dataclass
class PrismRequest:
    method: str
    path: str
    status: int | None
    rejected: bool
    detail: list[str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrismMock:
    def __init__(self, log_path: Path, spec: Path = TWILIO_SPEC, port: int | None = None) -> None:
        if not PRISM_BIN.exists():
            raise RuntimeError(f"{PRISM_BIN} is missing: run `npm ci` in {REPO} (package-lock.json)")
        if not spec.exists():
            raise RuntimeError(f"{spec} is missing (tests/vendor)")
        self.spec = spec
        self.port = port or _free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None
        self._offset = 0  # where this run's part of the log starts

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PrismMock:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        # Validation of requests is Prism's default in mock mode; `--errors` would also turn
        # violations of the spec's own response examples into errors, so it stays off.
        self._proc = subprocess.Popen(
            [str(PRISM_BIN), "mock", "-h", "127.0.0.1", "-p", str(self.port), str(self.spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(REPO),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prism exited with {self._proc.returncode}: {self.log()[-2000:]}")
            if "Prism is listening" in self.log():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prism did not start within {timeout:.0f}s: {self.log()[-2000:]}")

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def requests(self) -> list[PrismRequest]:
        """Every request Prism received, in order, with its answer and any validation errors."""
        out: list[PrismRequest] = []
        for line in self.log().splitlines():
            m = _REQUEST.search(line)
            if m:
                out.append(PrismRequest(m.group(1).upper(), m.group(2), None, False, []))
                continue
            if not out:
                continue
            s = _STATUS.search(line)
            if s and out[-1].status is None:
                out[-1].status = int(s.group(1))
            if _REJECT.search(line):
                out[-1].rejected = True
                out[-1].detail.append(line.split("]", 1)[-1].strip())
        return out

    def messages_created(self) -> list[PrismRequest]:
        return [r for r in self.requests() if r.method == "POST" and r.path.endswith("/Messages.json")]

    def rejected(self) -> list[PrismRequest]:
        return [r for r in self.requests() if r.rejected or (r.status is not None and r.status >= 400)]

    def assert_all_valid(self) -> None:
        bad = self.rejected()
        assert not bad, "Prism rejected requests against Twilio's contract:\n" + "\n".join(
            f"{r.method} {r.path} -> {r.status}: {'; '.join(r.detail)}" for r in bad
        )

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
