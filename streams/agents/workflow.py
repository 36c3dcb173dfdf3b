"""Cases and workflow steps: moves call events through the rules into action commands."""

from __future__ import annotations

import logging

from ringback.practice_directory import PracticeDirectory
from streams.rules import classify, recipes

log = logging.getLogger(__name__)


def on_call_event(event: dict, directory: PracticeDirectory, now_ms: int) -> list[dict]:
    if not classify.opens_case(event):
        return []
    practice = directory.by_id(event["practice_id"])
    if practice is None:
        log.warning("call event for unknown practice %s dropped", event["practice_id"])
        return []
    scenario = classify.classify(patient=None)
    return recipes.first_response(practice, event, scenario, now_ms)
