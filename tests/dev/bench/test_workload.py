"""The benchmark's traffic (ringback/dev/bench/workload.py, restart._entries): the day mix
has the reference practice's shares, every record sits in its caller's partition, and
a seed reproduces a run. No broker."""

from __future__ import annotations

import json

from ringback.config.practices_file import parse_practices
from ringback.dev.bench import restart, workload
from ringback.kafka import topics
from ringback.schemas import codec


def test_bench_practices_are_a_valid_practices_file():
    parsed = parse_practices(
        {
            "practices": workload.practices(3, {"first_response_hold": 0})
            + workload.practices(2, {"first_response_hold": 60}, start=3)
        }
    )
    assert [p.id for p in parsed.practices] == [f"bench-000{i}" for i in range(5)]
    assert parsed.practices[0].windows.first_response_hold == 0
    assert parsed.practices[4].windows.first_response_hold == 60
    assert parsed.practices[0].routing["nurse"] == "slack:BENCH_SLACK_WEBHOOK"


def test_day_mix_has_the_reference_practice_shares_and_is_reproducible():
    pop = workload.Population(10, 50, seed=7, now_ms=1_800_000_000_000)
    records, mix = workload.day_mix(pop, 20_000, 8, seed=11, now_ms=1_800_000_000_000)
    assert len(records) == 20_000
    calls = mix["answered"] + mix["missed"] + mix["voicemail"]
    assert abs((mix["missed"] + mix["voicemail"]) / calls - 18 / 94) < 0.015  # ~19 % of calls missed
    assert mix["missed_new_patient"] > mix["missed_known_patient"]  # most misses: new patients
    assert mix["transcription"] <= mix["voicemail"]
    again, _ = workload.day_mix(
        workload.Population(10, 50, seed=7, now_ms=1_800_000_000_000), 20_000, 8, seed=11, now_ms=1_800_000_000_000
    )
    assert again == records


def test_every_record_is_in_its_callers_partition_and_decodes():
    pop = workload.Population(5, 20, seed=1, now_ms=1_800_000_000_000)
    records, _ = workload.day_mix(pop, 500, 12, now_ms=1_800_000_000_000)
    for key, value, partition in records:
        event = codec.decode("call_event", value)
        assert key == topics.join_key(event["practice_id"], event["caller"])
        assert partition == topics.partition_for(key, 12)
    for name, recs in pop.ehr_records(12).items():
        schema = {"patients": "patient", "flags": "flag", "appointments": "appointment"}[name]
        for _key, value, partition in recs:
            record = codec.decode(schema, value)
            assert partition == topics.partition_for(topics.join_key(record["practice_id"], record["phone"]), 12)


def test_missed_calls_come_from_distinct_unknown_numbers():
    recs = workload.missed_calls(1000, 7, 8, 1_800_000_000_000)
    events = [codec.decode("call_event", v) for _, v, _ in recs]
    assert len({e["caller"] for e in events}) == 1000
    assert {e["outcome"] for e in events} == {"MISSED"}
    assert {e["received_at"] for e in events} == {1_800_000_000_000}


def test_changelog_entries_for_the_restart_figure_are_ehr_entries_in_their_callers_partition():
    entries = list(restart._entries(200, 10, 8, 1_800_000_000_000))
    assert len(entries) == 200
    for key, value, partition in entries:
        k = json.loads(key)
        kind, practice, phone = k.split("|")
        assert kind == "e"
        assert partition == topics.partition_for(topics.join_key(practice, phone), 8)
        v = json.loads(value)
        assert v["patient"]["deceased"] is False and set(v) == {"patient", "appointments", "flags"}
