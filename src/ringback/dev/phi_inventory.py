"""The PHI inventory's tables (docs/phi-inventory.md), made from the topic declarations
(`kafka/topics.py`) and the topics the worker's and the sinks' Faust apps create.

    python3 -m ringback.dev.phi_inventory     # prints the two tables

tests/kafka/test_phi_inventory.py checks that the page carries exactly these tables, so a
topic added, a reader changed or a retention moved shows up in review as a change of the page.
"""

from __future__ import annotations

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory

# What the Faust tables' changelogs hold, by the topic's name after the namespace/app prefix.
INTERNAL_PERSONAL_DATA = {
    "streams-state-changelog": (
        "worker",
        "per caller (key practice_id|caller number): open and recent cases, the last calls' verdicts, "
        "due gate timers, sent-step ids",
    ),
    "sinks-sent-log-changelog": (
        "sinks",
        "per action id: state of the send, Twilio message SID, case id, scenario, times (no number, no text)",
    ),
    "sinks-consent-changelog": ("sinks", "per practice_id|number: opted out or in, when, and how"),
    "sinks-sms-history-changelog": ("sinks", "per practice_id|number: send times of the last 7 days (caps)"),
    "sinks-deferred-changelog": (
        "sinks",
        "SMS actions waiting for quiet hours to end (number, text), and a per-number index",
    ),
    "sinks-ticks": ("sinks", "none (timer ticks)"),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe splits a table cell, in code spans too


def _days(ms: int) -> str:
    return f"{ms // topics.DAY_MS} days" if ms % topics.DAY_MS == 0 else f"{ms // 3_600_000} h"


def retention_text(spec: topics.TopicSpec, env: Settings) -> str:
    retention = topics.retention_ms(spec, env)
    if retention is None:
        return "compacted: the latest record per key; a deleted key within RINGBACK_PHI_RETENTION_DAYS"
    if spec.retention_ms is not None:
        return _days(retention)
    setting = "RINGBACK_PHI_RETENTION_DAYS" if spec.personal_data else "RINGBACK_OUTCOME_RETENTION_DAYS"
    return f"{setting} (default {_days(retention)})"


def topics_table(env: Settings) -> str:
    rows = [
        "| topic | key | personal data | retention | written by | read by |",
        "|---|---|---|---|---|---|",
    ]
    for spec in topics.ALL:
        rows.append(
            f"| `<ns>.{spec.suffix}` | `{_cell(spec.key)}` | {_cell(spec.personal_data) or 'none'} "
            f"| {retention_text(spec, env)} "
            f"| {', '.join(spec.writers)} | {', '.join(spec.readers) or 'operators only'} |"
        )
    return "\n".join(rows)


def internal_topics(env: Settings) -> list[str]:
    """The names, after `<ns>` and its separator, of the topics the Faust apps create themselves."""
    from ringback.sinks import app as sinks_app
    from ringback.worker.app import make_app
    from ringback.worker.topology import build_topology

    worker = build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))
    sinks = sinks_app.build_sinks(sinks_app.make_app(env), env, PracticeDirectory(), ManualClock(0))
    declared = {topics.topic_name(spec, env) for spec in topics.ALL}
    names = [t.get_topic_name() for t in worker.internal_topics + sinks.internal_topics]
    return [name[len(env.ringback_namespace) :] for name in names if name not in declared]


def internal_table(env: Settings) -> str:
    rows = ["| topic | process | personal data |", "|---|---|---|"]
    for name in internal_topics(env):
        process, data = INTERNAL_PERSONAL_DATA[name[1:]]
        rows.append(f"| `<ns>{name}` | {process} | {_cell(data)} |")
    return "\n".join(rows)


def tables(env: Settings | None = None) -> str:
    env = env or Settings.model_construct()  # the defaults, whatever this shell's environment says
    return topics_table(env) + "\n\n" + internal_table(env) + "\n"


if __name__ == "__main__":
    print(tables(), end="")
