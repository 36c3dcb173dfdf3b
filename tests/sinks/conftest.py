"""Fixtures of the sink tests."""

from __future__ import annotations

import pytest

from tests.sinks.harness import example_practices


@pytest.fixture
def practices():
    """The practices of examples/practices.yaml (Maple Family Practice first)."""
    return example_practices()
