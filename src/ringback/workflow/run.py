"""What one run of the workflow works with: one input (or TICK) of one partition at `now`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ringback.domain.practice import Practice
from ringback.workflow.state import Tx


class Practices(Protocol):
    """Where the workflow finds a practice by id (the worker passes its practice directory)."""

    def by_id(self, practice_id: str) -> Practice | None: ...


@dataclass(frozen=True)
class Run:
    tx: Tx  # the state table as this input sees it, and what it emitted
    practices: Practices
    now: int  # epoch ms: the only time the rules see
    partition: int
