"""A real single-node Apache Kafka broker without Docker.

Maven resolves the pinned `org.apache.kafka:kafka_2.13` jars (the package's
`ringback/dev/kafka/pom.xml`) into a cache folder; this module formats KRaft storage
once, starts `kafka.Kafka` on loopback with a small heap, waits until it serves
metadata, and stops it cleanly. A broker is identified by its data folder: a second
`start` with the same folder reuses the data of the first.

`secure=True` (`ringback kafka start --secure`) makes a broker as a health system runs it:
one SASL_SSL listener (SCRAM-SHA-512/256) with a certificate from a CA made for it
(`dev/certificates.py`), TLS with client certificates to its controller, and KRaft's
StandardAuthorizer (no ACL: no access) with one super user, `admin`, whose SCRAM credential
is written at format time. `add_scram_user` adds principals; `client_env` gives the settings
a ringback process needs to connect as one of them.

The POM, the broker configuration template and the Log4j2 configuration ship as
package data (read with importlib.resources); nothing is ever written next to them.
The jars go to RINGBACK_KAFKA_CACHE, else the per-user cache folder; a broker's data
and logs to the folder it is given, else the per-user data folder (`user_dirs`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

from ringback.config import user_dirs
from ringback.dev import child_process
from ringback.dev.certificates import BrokerTls, make_broker_tls

BROKER_FILES = resources.files("ringback.dev") / "kafka"

ADMIN_USER = "admin"  # the secured broker's super user
SCRAM = "SCRAM-SHA-512"

PLAINTEXT_LISTENERS = """\
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"""

# Clients: SASL_SSL with SCRAM. The broker to itself: SCRAM as admin; to its controller: TLS
# with its certificate as the client's (principal CN=...). No ACL means no access.
SECURE_LISTENERS = """\
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required username="{admin}" password="{password}";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca_file}
ssl.endpoint.identification.algorithm=https
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{admin};{broker_principal}"""


class KafkaError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def cache_dir() -> Path:
    """Where the jars are kept: RINGBACK_KAFKA_CACHE, else the per-user cache folder."""
    configured = os.environ.get("RINGBACK_KAFKA_CACHE")
    return Path(configured) if configured else user_dirs.cache_path("kafka")


def default_home(port: int) -> Path:
    """The data folder of the broker on `port` when none is given."""
    return user_dirs.data_path("kafka", str(port))


def libs_dir() -> Path:
    return cache_dir() / "libs"


def kafka_version() -> str:
    text = (BROKER_FILES / "pom.xml").read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>", start)]


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve the broker jars with Maven, once per pinned version."""
    libs = libs_dir()
    marker = libs / f".kafka-{kafka_version()}"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise KafkaError("Maven (`mvn`) is not installed; it fetches the Kafka jars from Maven Central")
    if libs.exists():
        shutil.rmtree(libs)
    # Maven runs on a copy in the cache: it may write next to its POM, never into the package.
    pom = cache_dir() / "pom.xml"
    pom.parent.mkdir(parents=True, exist_ok=True)
    pom.write_text((BROKER_FILES / "pom.xml").read_text())
    cmd = ["mvn", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={libs}"]
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0:
        raise KafkaError(f"Maven could not fetch the Kafka jars:\n{result.stdout}{result.stderr}")
    marker.touch()
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalKafka:
    """One broker: its port and the folder that holds its configuration, data, logs and pid."""

    def __init__(self, port: int = 9092, home: Path | None = None, heap: str = "768m", secure: bool = False) -> None:
        self.port = port
        self.home = Path(home) if home else default_home(port)
        self.heap = heap
        # A broker once started secure stays so (its folder holds its CA).
        self.secure = secure or self.tls_dir.exists()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def secrets_dir(self) -> Path:
        """The admin's KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD files (a RINGBACK_SECRETS_DIR)."""
        return self.home / "secrets"

    def admin_password(self) -> str:
        path = self.secrets_dir / "KAFKA_SASL_PASSWORD"
        if not path.exists():
            self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.secrets_dir / "KAFKA_SASL_USERNAME").write_text(ADMIN_USER)
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(16))
        return path.read_text().strip()

    def client_env(self, user: str = ADMIN_USER, password: str | None = None) -> dict[str, str]:
        """The environment of a ringback process connecting as `user` (default: the super user).
        A real deployment puts the username and password in RINGBACK_SECRETS_DIR instead."""
        if not self.secure:
            return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM,
            "KAFKA_SSL_CA_FILE": str(self.ca_file),
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.admin_password() if password is None else password,
        }

    def client_config(self, user: str = ADMIN_USER, password: str | None = None) -> dict[str, Any]:
        """librdkafka properties connecting as `user` (default: the super user)."""
        if not self.secure:
            return {"bootstrap.servers": self.bootstrap}
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM,
            "sasl.username": user,
            "sasl.password": self.admin_password() if password is None else password,
            "ssl.ca.location": str(self.ca_file),
            "ssl.endpoint.identification.algorithm": "https",
        }

    def add_scram_user(self, user: str, password: str, mechanism: str = SCRAM) -> None:
        """Create (or change the password of) a SCRAM principal, through the admin API as `admin`."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        kind = ScramMechanism.SCRAM_SHA_512 if mechanism == "SCRAM-SHA-512" else ScramMechanism.SCRAM_SHA_256
        admin = AdminClient({**self.client_config(), "logger": _SilentLogger()})  # type: ignore[dict-item]  # a logger object is accepted; the stubs list plain values
        upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(kind, 8192), password.encode())
        for future in admin.alter_user_scram_credentials([upsert], request_timeout=30).values():
            future.result()

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def _controller_port(self) -> int:
        # Kept with the data: the quorum address is written into the formatted storage.
        path = self.home / "controller.port"
        if path.exists():
            return int(path.read_text())
        port = free_port()
        path.write_text(str(port))
        return port

    @property
    def log_config(self) -> Path:
        return self.home / "log4j2.properties"

    def _write_config(self) -> Path:
        """The broker's configuration files, in its folder (Java reads files, not package resources)."""
        template = (BROKER_FILES / "server.properties.template").read_text()
        listeners = PLAINTEXT_LISTENERS.format(port=self.port, controller_port=self._controller_port())
        if self.secure:
            tls = make_broker_tls(self.tls_dir)
            listeners = self._secure_listeners(tls)
        props = template.format(
            port=self.port, controller_port=self._controller_port(), data_dir=self.data_dir, listeners=listeners
        )
        path = self.home / "server.properties"
        path.touch(mode=0o600)  # with --secure it holds the admin's password
        path.write_text(props)
        self.log_config.write_text((BROKER_FILES / "log4j2.properties").read_text())
        return path

    def _secure_listeners(self, tls: BrokerTls) -> str:
        return SECURE_LISTENERS.format(
            port=self.port,
            controller_port=self._controller_port(),
            admin=ADMIN_USER,
            password=self.admin_password(),
            keystore=tls.keystore_file,
            ca_file=tls.ca_file,
            broker_principal=tls.principal,
        )

    def _java(self, main: str, *args: str, **popen: Any) -> subprocess.Popen:
        java = shutil.which("java")
        if java is None:
            raise KafkaError("Java 17+ (`java`) is not installed")
        cmd = [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.log_config}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            f"{libs_dir()}/*",
            main,
            *args,
        ]
        return subprocess.Popen(cmd, **popen)

    def _format(self, props: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = (
            subprocess.run(
                ["java", "-cp", f"{libs_dir()}/*", "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        proc = self._java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            # The super user exists before the broker first starts: it talks to itself as admin.
            *(["--add-scram", f"{SCRAM}=[name={ADMIN_USER},password={self.admin_password()}]"] if self.secure else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise KafkaError(f"formatting KRaft storage failed:\n{out}")

    def start(self, timeout: float = 90.0, die_with_parent: bool = False) -> LocalKafka:
        """Start the broker (or wait for the one already running here). `die_with_parent`:
        the broker is stopped when this process dies, even by SIGKILL (the demo's broker);
        `ringback kafka start` leaves it running on purpose."""
        if self.pid() is not None:
            self.wait_ready(timeout)
            return self
        if _port_open(self.port):
            raise KafkaError(
                f"port {self.port} is already in use by another process; pass --port or set KAFKA_BOOTSTRAP_SERVERS"
            )
        fetch_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        self._format(props)
        out = open(self.log_dir / "stdout.log", "ab")
        proc = self._java(
            "kafka.Kafka",
            str(props),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_process.die_with_parent if die_with_parent else None,
        )
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(timeout, proc=proc)
        except KafkaError:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
        """Wait until the broker answers a metadata request with itself in it."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        # confluent-kafka accepts a logger object here; its type hints list plain values only.
        config: dict[str, Any] = {**self.client_config(), "log_level": 0, "logger": _SilentLogger()}
        admin = AdminClient(config)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise KafkaError(f"the broker exited with {proc.returncode}; see {self.log_dir}/")
            if _port_open(self.port):
                try:
                    md = admin.list_topics(timeout=2)
                    if md.brokers:
                        return
                except Exception:  # noqa: BLE001 - not ready yet: retry until the deadline
                    pass
            time.sleep(0.2)
        raise KafkaError(f"the broker did not serve metadata within {timeout:.0f}s; see {self.log_dir}/")

    def stop(self, timeout: float = 30.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return f"stopped (data in {self.home})"
        secured = f", SASL_SSL ({SCRAM}, CA {self.ca_file}, authorizer on)" if self.secure else ""
        return f"running, pid {pid}, on {self.bootstrap}{secured} (data in {self.home})"


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); /proc tells the truth on Linux.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class _SilentLogger:
    """librdkafka logs connection refusals while the broker boots; they are expected."""

    def log(self, *args: object, **kwargs: object) -> None:
        pass
