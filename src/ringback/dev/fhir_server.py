"""A real FHIR R4 server without Docker: HAPI FHIR's JPA server on an in-memory H2 database.

Maven resolves the pinned HAPI FHIR jars (the package's `ringback/dev/hapi/pom.xml`) into
a cache folder and `javac` compiles our launcher (`hapi/LocalHapiServer.java`, a Spring
configuration plus Jetty) against them, once per pinned version and launcher source. The
server it starts implements what ringback's EHR sources read: search with `_lastUpdated`
and paging (`Bundle.link` next), `[type]/_history` with deletions, and Bulk Data `$export`.
Its data lives in memory and is gone when it stops.

The jars go to RINGBACK_FHIR_CACHE, else the per-user cache folder (`user_dirs`).
`python -m ringback.dev.fhir_server fetch` fetches them ahead (CI does, like the broker's).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx

from ringback.config import user_dirs
from ringback.dev import child_process

HAPI_FILES = resources.files("ringback.dev") / "hapi"
LAUNCHER = "dev.ringback.hapi.LocalHapiServer"
READY_LINE = "ringback-hapi ready on"


class FhirServerError(RuntimeError):
    """The local HAPI FHIR server could not be fetched or started."""


def cache_dir() -> Path:
    """Where the jars and the compiled launcher are kept: RINGBACK_FHIR_CACHE, else the per-user cache."""
    configured = os.environ.get("RINGBACK_FHIR_CACHE")
    return Path(configured) if configured else user_dirs.cache_path("hapi-fhir")


def _pinned() -> str:
    """A digest of the POM and the launcher: a change to either fetches and compiles again."""
    digest = hashlib.sha256()
    for name in ("pom.xml", "LocalHapiServer.java"):
        digest.update((HAPI_FILES / name).read_bytes())
    return digest.hexdigest()[:16]


def fetch(quiet: bool = True) -> Path:
    """Resolve the HAPI FHIR jars with Maven and compile the launcher, once per pinned version."""
    home = cache_dir()
    marker = home / f".hapi-{_pinned()}"
    if marker.exists():
        return home
    for tool in ("mvn", "javac"):
        if shutil.which(tool) is None:
            raise FhirServerError(f"`{tool}` is not installed; a JDK 17 and Maven build the local HAPI FHIR server")
    for stale in ("libs", "classes"):
        shutil.rmtree(home / stale, ignore_errors=True)
    for old in home.glob(".hapi-*"):
        old.unlink()
    home.mkdir(parents=True, exist_ok=True)
    # Maven runs on a copy in the cache: it may write next to its POM, never into the package.
    pom = home / "pom.xml"
    pom.write_text((HAPI_FILES / "pom.xml").read_text())
    cmd = ["mvn", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={home / 'libs'}"]
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0:
        raise FhirServerError(f"Maven could not fetch the HAPI FHIR jars:\n{result.stdout}{result.stderr}")
    source = home / "LocalHapiServer.java"
    source.write_text((HAPI_FILES / "LocalHapiServer.java").read_text())
    (home / "logback.xml").write_text((HAPI_FILES / "logback.xml").read_text())
    compiled = subprocess.run(
        ["javac", "-nowarn", "-d", str(home / "classes"), "-cp", f"{home / 'libs'}/*", str(source)],
        capture_output=True,
        text=True,
    )
    if compiled.returncode != 0:
        raise FhirServerError(f"javac could not compile the HAPI FHIR launcher:\n{compiled.stderr}")
    marker.touch()
    return home


class LocalFhirServer:
    """One HAPI FHIR JPA server on 127.0.0.1:`port`, base URL `http://127.0.0.1:<port>/fhir`."""

    def __init__(self, port: int, log_path: Path, heap: str = "768m") -> None:
        self.port = port
        self.log_path = log_path
        self.heap = heap
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self, timeout: float = 600.0) -> LocalFhirServer:
        """Start it and wait until it serves its CapabilityStatement. The timeout is generous:
        Spring, Hibernate and HAPI's validation support take a minute or more on 2 busy CPUs."""
        java = shutil.which("java")
        if java is None:
            raise FhirServerError("Java 17+ (`java`) is not installed")
        home = fetch()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        cmd = [
            java,
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # starts faster; a test server's throughput is not the point
            f"-Dlogback.configurationFile={home / 'logback.xml'}",
            "-cp",
            f"{home / 'classes'}:{home / 'libs'}/*",
            LAUNCHER,
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_process.die_with_parent,
        )
        out.close()
        try:
            self.wait_ready(timeout)
        except FhirServerError:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise FhirServerError(f"the HAPI FHIR server exited with {self.proc.returncode}; see {self.log_path}")
            if READY_LINE in self.log_path.read_text(errors="replace"):
                try:
                    if httpx.get(f"{self.base}/metadata", timeout=30).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise FhirServerError(f"the HAPI FHIR server was not ready within {timeout:.0f}s; see {self.log_path}")

    def expunge_everything(self) -> None:
        """Forget every resource and its history (HAPI's `$expunge`): a clean server per test."""
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
        }
        response = httpx.post(f"{self.base}/$expunge", json=body, timeout=120)
        if response.status_code != 200:
            raise FhirServerError(f"$expunge failed: HTTP {response.status_code}: {response.text[:500]}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def main(argv: list[str]) -> int:
    if argv[1:] == ["fetch"]:
        started = time.monotonic()
        print(f"HAPI FHIR server ready to start from {fetch(quiet=False)} ({time.monotonic() - started:.0f} s)")
        return 0
    print("usage: python -m ringback.dev.fhir_server fetch", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
