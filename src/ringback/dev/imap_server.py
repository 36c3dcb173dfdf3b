"""A real IMAP server for the Google Voice mailbox: Debian's dovecot, started on a free port
with its own configuration, mail and TLS certificate in a folder of the caller's choosing
(the system's dovecot service is never used). The Google Voice tests start one per test;
`ringback demo` starts one for its Google Voice practices when dovecot is installed
(`available()`; `.ci/run` installs `dovecot-imapd`). Not imported by the runtime.

One mailbox user (`USER` / `PASSWORD`); the server speaks IMAP over implicit TLS
(`imaps`) with a self-signed certificate the client trusts through `ca_file`.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ringback.dev.child_process import die_with_parent

USER = "frontdesk"
PASSWORD = "imap-test-password"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

_CONFIG = """\
base_dir = {home}/run
state_dir = {home}/state
log_path = {home}/dovecot.log
info_log_path = {home}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{home}/cert.pem
ssl_key = <{home}/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{home}/mail/%u
default_internal_user = {run_user}
default_internal_group = {run_group}
default_login_user = {login_user}
first_valid_uid = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {home}/passwd
}}
userdb {{
  driver = static
  args = uid={run_user} gid={run_group} home={home}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> bool:
    """Is dovecot installed (Debian's `dovecot-imapd`)?"""
    return os.access(DOVECOT, os.X_OK)


def _self_signed(home: Path) -> None:
    # The certificate is made with `cryptography` (a dev dependency), imported here only.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(_loopback())]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (home / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (home / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _loopback():
    import ipaddress

    return ipaddress.ip_address("127.0.0.1")


class ImapServer:
    """dovecot in the foreground (`-F`) on 127.0.0.1:`port`, stopped with `stop()`."""

    def __init__(self, home: Path, die_with_parent: bool = False) -> None:
        self.home = home
        self.die_with_parent = die_with_parent  # SIGTERM when the process that started it dies (Linux)
        self.port = 0
        self.host = "127.0.0.1"
        self.ca_file = home / "cert.pem"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> ImapServer:
        home = self.home
        for sub in ("run", "state", "mail"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        _self_signed(home)
        (home / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        # As root dovecot drops privileges to these users; as anyone else it runs as that user.
        root = os.geteuid() == 0
        run_user = "dovecot" if root else _me()
        mail_owner = _me()
        if root:
            shutil.chown(home / "mail", "dovecot", "dovecot")
            for sub in ("run", "state"):
                os.chmod(home / sub, 0o755)
            os.chmod(home, 0o755)
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            (home / "dovecot.conf").write_text(
                _CONFIG.format(
                    home=home,
                    port=self.port,
                    run_user=run_user,
                    run_group=run_user if root else _my_group(),
                    login_user="dovenull" if root else mail_owner,
                )
            )
            if self._launch(timeout):
                return self
            self.stop()
        raise RuntimeError(f"dovecot did not start; see {home / 'dovecot.log'} and {home / 'stdout.log'}")

    def restart(self, timeout: float = 20.0) -> None:
        """Stopped and started again on the same port, with the same mail (a server restart)."""
        self.stop()
        if not self._launch(timeout):
            raise RuntimeError(f"dovecot did not start again; see {self.home / 'dovecot.log'}")

    def _launch(self, timeout: float) -> bool:
        log = open(self.home / "stdout.log", "ab")
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.home / "dovecot.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def client(self):
        """A logged-in IMAPClient (for delivering messages with APPEND)."""
        import ssl

        from imapclient import IMAPClient

        context = ssl.create_default_context(cafile=str(self.ca_file))
        client = IMAPClient(self.host, port=self.port, ssl=True, ssl_context=context, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def ensure_folder(self, folder: str) -> None:
        """The folder exists (a watcher can select it before any mail arrives)."""
        client = self.client()
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
        finally:
            client.logout()

    def deliver(self, *messages: bytes, folder: str = "INBOX") -> None:
        client = self.client()
        try:
            for message in messages:
                client.append(folder, message)
        finally:
            client.logout()


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _my_group() -> str:
    import grp

    return grp.getgrgid(os.getegid()).gr_name
