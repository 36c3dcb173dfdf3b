"""The real browser of the console's Playwright tests: Debian's chromium, one per test module."""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("RINGBACK_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), (
        f"{CHROMIUM} missing: apt-get install -y chromium (as .ci/run does)"
    )
    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root without it
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield b
        finally:
            b.close()
