"""`ringback ehr export` against HAPI FHIR's Bulk Data `$export` on the real broker: a full
export, then an incremental one (`_since` the last transactionTime), and an export killed
between an output's download and its publish that the next run finishes without
publishing anything twice."""

from __future__ import annotations

import pytest

from ringback.config.settings import Settings
from ringback.sources.ehr import bulk, fhir
from ringback.sources.ehr.publisher import StateStore
from tests.sources.ehr.test_fhir_client import seed_harbour
from tests.sources.ehr.test_fhir_sync import PARTITIONS, live, practices, run_json, topic_view  # noqa: F401
from tests.sources.topic_records import read_topic

pytestmark = pytest.mark.integration

HARBOUR = b"harbour-gp|"
PHONES = (b"+61355556473", b"+61334105613", b"+61412345678", b"+61391234567", b"+61413000111")
PATIENT_KEYS = {HARBOUR + p for p in PHONES}


def export_args(hapi) -> tuple[str, ...]:
    return ("ehr", "export", "--base-url", hapi.base, "--practice", "harbour-gp", "--poll-max", "1")


def test_full_then_incremental_export(practices, hapi, processes, kafka_bootstrap, service_env):  # noqa: F811
    ns = service_env["RINGBACK_NAMESPACE"]
    seed_harbour(hapi)
    report = run_json(processes, *export_args(hapi))
    assert report["since"] is None and report["transaction_time"]
    assert report["resources"] == {"Patient": 4, "Appointment": 4, "Flag": 3}
    assert report["outputs"] == report["outputs_published"] == 3
    assert report["dead_letters"] == 2  # the two unusable numbers, as with the REST sync
    assert live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")) == PATIENT_KEYS
    assert live(topic_view(kafka_bootstrap, ns, "appointments", "harbour-gp")) == {
        HARBOUR + b"+61355556473|example",
        HARBOUR + b"+61334105613|example",
        HARBOUR + b"+61355556473|2docs",
        HARBOUR + b"+61334105613|2docs",
        HARBOUR + b"+61412345678|appt-multi",
        HARBOUR + b"+61391234567|appt-multi",
    }
    assert live(topic_view(kafka_bootstrap, ns, "flags", "harbour-gp")) == {
        HARBOUR + b"+61355556473|example-encounter",
        HARBOUR + b"+61334105613|example-encounter",
        HARBOUR + b"+61355556473|callback-1",
        HARBOUR + b"+61334105613|callback-1",
    }

    # The EHR changes; the next export asks only for what changed since the last one.
    hapi.update("Patient", "example", active=False)
    hapi.update("Appointment", "appt-multi", status="cancelled")
    again = run_json(processes, *export_args(hapi))
    assert again["since"] == report["transaction_time"]
    assert again["resources"] == {"Patient": 1, "Appointment": 1}
    assert live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")) == PATIENT_KEYS - {
        HARBOUR + b"+61355556473",
        HARBOUR + b"+61334105613",
    }
    appointments = live(topic_view(kafka_bootstrap, ns, "appointments", "harbour-gp"))
    assert {k for k in appointments if b"appt-multi" in k} == set()


def test_an_export_killed_after_a_download_resumes_and_publishes_nothing_twice(
    practices,  # noqa: F811
    hapi,
    processes,
    kafka_bootstrap,
    service_env,
    monkeypatch,
):
    ns = service_env["RINGBACK_NAMESPACE"]
    seed_harbour(hapi)
    env = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        ringback_namespace=ns,
        ringback_partitions=PARTITIONS,
        ringback_state_dir=service_env["RINGBACK_STATE_DIR"],
    )

    class Killed(BaseException):
        """The process dies here: nothing more of the export runs (no publish, no state save)."""

    published = []
    real_import = fhir.import_ndjson

    async def dies_at_the_second_output(sync, paths):
        if published:
            raise Killed  # the Appointment file is downloaded, not published
        published.append(paths)
        return await real_import(sync, paths)

    monkeypatch.setattr(bulk, "import_ndjson", dies_at_the_second_output)
    with pytest.raises(Killed):
        bulk.run_export(env, hapi.base, "harbour-gp", poll_max_s=1)
    job = StateStore(env, "harbour-gp").load()[bulk.STATE_KEY]["job"]
    assert job["manifest"] is not None and len(job["published"]) == 1  # the Patient output

    monkeypatch.setattr(bulk, "import_ndjson", real_import)
    report = run_json(processes, *export_args(hapi))
    assert report["resumed"] is True and report["status_url"] == job["status_url"]  # no second kick-off
    assert report["outputs_already_published"] == 1 and report["outputs_published"] == 2
    assert report["resources"] == {"Appointment": 4, "Flag": 3}

    # Every key once on each topic: nothing published twice across the crash.
    for suffix in ("patients", "appointments", "flags"):
        keys = [r["key"] for r in read_topic(kafka_bootstrap, f"{ns}.{suffix}")]
        assert len(keys) == len(set(keys)), suffix
    assert live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")) == PATIENT_KEYS
    assert StateStore(env, "harbour-gp").load()[bulk.STATE_KEY]["job"] is None
