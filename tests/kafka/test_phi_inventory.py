"""docs/phi-inventory.md agrees with the topic declarations and the Faust apps' own topics."""

from __future__ import annotations

import re
from pathlib import Path

from ringback.config.settings import Settings
from ringback.dev import phi_inventory
from ringback.kafka import topics

PAGE = Path(__file__).resolve().parents[2] / "docs" / "phi-inventory.md"


def generated_part() -> str:
    text = PAGE.read_text()
    match = re.search(r"<!-- inventory: generated, do not edit by hand -->\n(.*)<!-- inventory: end -->", text, re.S)
    assert match, "docs/phi-inventory.md lost its generated markers"
    return match.group(1)


def test_the_page_carries_the_tables_made_from_the_declarations():
    assert generated_part() == phi_inventory.tables(), (
        "docs/phi-inventory.md is out of date: put `python3 -m ringback.dev.phi_inventory` between its markers"
    )


def test_every_declared_topic_is_listed_once_and_nothing_else():
    listed = re.findall(r"^\| `<ns>\.([a-z0-9-]+)` \| `", generated_part(), re.M)
    assert sorted(listed) == sorted(spec.suffix for spec in topics.ALL)


def test_every_topic_says_what_personal_data_it_holds_and_who_uses_it():
    for spec in topics.ALL:
        assert spec.writers, spec.suffix
        assert set(spec.writers) | set(spec.readers) <= set(topics.PROCESSES), spec.suffix
        assert spec.compacted or topics.retention_ms(spec, Settings.model_construct()), spec.suffix
    with_phi = {spec.suffix for spec in topics.ALL if spec.personal_data}
    assert {"call-events", "patients", "actions", "tasks", "dead-letters"} <= with_phi
    assert "outcomes" not in with_phi  # BI keeps it longer: nothing personal may be added to it unnoticed


def test_the_faust_apps_topics_are_described_and_no_stale_ones_remain(tmp_path):
    env = Settings(_env_file=None, ringback_state_dir=tmp_path, ringback_store="memory://")
    names = [name[1:] for name in phi_inventory.internal_topics(env)]
    assert sorted(names) == sorted(phi_inventory.INTERNAL_PERSONAL_DATA)
