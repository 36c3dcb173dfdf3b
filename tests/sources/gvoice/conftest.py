"""The IMAP server of the Google Voice tests: Debian's dovecot, one per test, on a free port."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from ringback.dev.imap_server import ImapServer


@pytest.fixture
def imap_server():
    # Not under pytest's tmp_path: its parents are private to this user, and dovecot's mail
    # processes run as the `dovecot` user when the tests run as root.
    home = Path(tempfile.mkdtemp(prefix="ringback-imap-"))
    server = ImapServer(home).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
