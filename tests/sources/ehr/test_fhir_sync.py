"""`ringback ehr sync` / `ringback ehr import` on the real broker: HL7 R4 examples and
Synthea data served by HAPI FHIR (paged with Bundle.link next) or read from Bulk Data
NDJSON become keyed patient / appointment / flag records and tombstones, each in the
partition of the caller it joins with. The `--every` test stops its FHIR server mid-run,
so it keeps the hand-written one (test_fhir_client.FhirTestServer)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ringback.kafka.topics import join_key, partition_for
from ringback.schemas import codec
from tests.conftest import free_port, wait_for
from tests.sources.ehr.test_fhir_client import FhirTestServer, seed_harbour
from tests.sources.ehr.test_fhir_mapping import VENDOR, callback_flag, hl7, synthea_patients
from tests.sources.topic_records import read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 4
PRACTICES_YAML = """practices:
  - id: harbour-gp
    name: Harbour General Practice
    time_zone: Australia/Melbourne
    phone_numbers: ["+61 3 9000 0000"]
    sms_from: "+61390000000"
    booking_link: https://book.example.org/harbour
  - id: oak-clinic
    name: Oak Clinic
    time_zone: America/New_York
    phone_numbers: ["+1 617 555 0150"]
    sms_from: "+16175550150"
    booking_link: https://book.example.org/oak
"""
SCHEMAS = {"patients": "patient", "appointments": "appointment", "flags": "flag"}


@pytest.fixture
def practices(processes, tmp_path):
    path = tmp_path / "practices.yaml"
    path.write_text(PRACTICES_YAML)
    applied = processes.run("config", "apply", str(path))
    assert applied.returncode == 0, applied.stderr


@pytest.fixture
def fhir_server():
    server = FhirTestServer()
    yield server
    server.close()


def topic_view(bootstrap: str, ns: str, suffix: str, practice: str) -> dict[bytes, dict | None]:
    """The compacted view (last value per key) of one EHR topic, after checking that every
    record, tombstones included, sits in partition_for(practice|phone)."""
    view: dict[bytes, dict | None] = {}
    for r in read_topic(bootstrap, f"{ns}.{suffix}"):
        phone = r["key"].decode().split("|")[1]
        assert r["partition"] == partition_for(join_key(practice, phone), PARTITIONS), r["key"]
        view[r["key"]] = codec.decode(SCHEMAS[suffix], r["value"]) if r["value"] is not None else None
    return view


def live(view: dict[bytes, dict | None]) -> set[bytes]:
    return {k for k, v in view.items() if v is not None}


def run_json(processes, *args: str) -> dict:
    done = processes.run(*args, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_rest_sync_publishes_keyed_records_then_tombstones(practices, hapi, processes, kafka_bootstrap, service_env):
    """Against HAPI FHIR (JPA): its search with _lastUpdated, its paging (2 a page: every
    type is read through Bundle.link next) and its _history with deletions."""
    ns = service_env["RINGBACK_NAMESPACE"]
    seed_harbour(hapi)
    hapi.put(
        callback_flag(
            id="callback-2", subject={"reference": "Patient/multi-phone"}, extension=[], code={"text": "Refill request"}
        )
    )
    sync = ("ehr", "sync", "--base-url", hapi.base, "--practice", "harbour-gp", "--page-size", "2")
    report = run_json(processes, *sync)
    assert report["resources"] == {"Patient": 4, "Appointment": 4, "Flag": 4}  # every page read
    assert report["patients_without_phone"] == 1  # HL7 Patient/pat1
    assert report["phones_rejected"] == 2 and report["dead_letters"] == 2

    harbour = b"harbour-gp|"
    patients = topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")
    assert live(patients) == {
        harbour + b"+61355556473",
        harbour + b"+61334105613",
        harbour + b"+61412345678",
        harbour + b"+61391234567",
        harbour + b"+61413000111",
    }
    assert patients[harbour + b"+61334105613"]["patient_id"] == "example"
    assert patients[harbour + b"+61412345678"]["display_name"] == "Lan Nguyen"
    appointments = topic_view(kafka_bootstrap, ns, "appointments", "harbour-gp")
    assert live(appointments) == {
        harbour + b"+61355556473|example",
        harbour + b"+61334105613|example",
        harbour + b"+61355556473|2docs",
        harbour + b"+61334105613|2docs",
        harbour + b"+61412345678|appt-multi",
        harbour + b"+61391234567|appt-multi",
    }
    assert appointments[harbour + b"+61355556473|example"]["start"] == 1386666000000  # 2013-12-10T09:00:00Z
    flags = topic_view(kafka_bootstrap, ns, "flags", "harbour-gp")
    assert live(flags) == {
        harbour + b"+61355556473|example-encounter",
        harbour + b"+61334105613|example-encounter",
        harbour + b"+61355556473|callback-1",
        harbour + b"+61334105613|callback-1",
        harbour + b"+61412345678|callback-2",
        harbour + b"+61391234567|callback-2",
    }
    assert flags[harbour + b"+61334105613|callback-1"]["priority"] == "PH"
    assert flags[harbour + b"+61334105613|callback-1"]["callback_requested"] is True
    assert flags[harbour + b"+61412345678|callback-2"]["callback_requested"] is False
    assert flags[harbour + b"+61355556473|example"] is None  # HL7 Flag/example is inactive
    # The explicit partition matters: hashing the appointment key itself would misplace some.
    assert any(partition_for(k, PARTITIONS) != partition_for(k.rsplit(b"|", 1)[0], PARTITIONS) for k in appointments)
    dead = [codec.decode("dead_letter", r["value"]) for r in read_topic(kafka_bootstrap, f"{ns}.dead-letters")]
    assert sorted(d["reason"] for d in dead) == [
        "Patient/bad-phones telecom[0]: too short",
        "Patient/bad-phones telecom[1]: not a phone number (no digits that form a number)",
    ]

    # The EHR changes: a patient inactivated, one deleted, one loses a phone, an appointment cancelled.
    hapi.update("Patient", "example", active=False)
    hapi.delete("Patient", "bad-phones")
    multi = hapi.resources[("Patient", "multi-phone")]
    hapi.update("Patient", "multi-phone", telecom=[t for t in multi["telecom"] if t.get("use") != "home"])
    hapi.update("Appointment", "appt-multi", status="cancelled")
    report = run_json(processes, *sync, "--overlap", "0")
    # Incremental: what changed, plus the newest Flag of the last run again (`ge` is inclusive).
    assert report["resources"] == {"Patient": 2, "Appointment": 1, "Flag": 1}
    assert report["deleted"] == {"Patient": 1}  # read from Patient/_history

    patients = topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")
    assert live(patients) == {harbour + b"+61412345678"}
    assert {
        harbour + b"+61355556473",
        harbour + b"+61334105613",
        harbour + b"+61413000111",
        harbour + b"+61391234567",
    } <= set(patients)
    assert live(topic_view(kafka_bootstrap, ns, "appointments", "harbour-gp")) == set()
    assert live(topic_view(kafka_bootstrap, ns, "flags", "harbour-gp")) == {harbour + b"+61412345678|callback-2"}


def test_sync_every_interval_serves_metrics_and_outlives_a_failed_run(
    practices, fhir_server, processes, kafka_bootstrap, service_env
):
    ns = service_env["RINGBACK_NAMESPACE"]
    seed_harbour(fhir_server)
    port = free_port()
    processes.start(
        "ehr-sync",
        "ehr",
        "sync",
        "--base-url",
        fhir_server.base,
        "--practice",
        "harbour-gp",
        "--every",
        "1",
        "--metrics-port",
        str(port),
    )

    def scrape() -> dict[tuple[str, str], float]:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return {}
        return {
            (s.name, s.labels.get("result") or s.labels.get("source") or ""): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    wait_for(lambda: scrape().get(("ringback_ehr_sync_runs_total", "ok"), 0) >= 2, 60, message="two sync runs done")
    m = scrape()
    assert m[("ringback_ehr_sync_runs_total", "failed")] == 0
    assert m[("ringback_ehr_last_success_timestamp_seconds", "")] > 0
    assert m[("ringback_dead_letters_total", "fhir:Patient")] >= 2  # the two unusable numbers, counted
    harbour = b"harbour-gp|"
    assert harbour + b"+61412345678" in live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp"))

    fhir_server.close()  # the EHR goes away: runs fail, are counted, and the process carries on
    wait_for(
        lambda: scrape().get(("ringback_ehr_sync_runs_total", "failed"), 0) >= 2, 60, message="failed runs counted"
    )
    assert processes.procs["ehr-sync"].poll() is None
    assert "EHR sync run failed" in processes.log("ehr-sync")


def test_ndjson_import_and_state_that_survives_restarts(practices, processes, kafka_bootstrap, service_env, tmp_path):
    ns = service_env["RINGBACK_NAMESPACE"]
    synthea = synthea_patients()

    def phone(patient: dict) -> str:
        return "+1" + "".join(c for c in patient["telecom"][0]["value"] if c.isdigit())

    extra = tmp_path / "Appointment.000.ndjson"
    extra.write_text(
        json.dumps(
            {
                **hl7("Appointment-example"),
                "id": "s-appt",
                "start": "2026-12-01T15:00:00Z",
                "participant": [{"actor": {"reference": f"Patient/{synthea[2]['id']}"}}],
            }
        )
        + "\n{not json\n"
    )
    report = run_json(
        processes,
        "ehr",
        "import",
        str(VENDOR / "synthea_Patient.000.ndjson"),
        str(VENDOR / "synthea_Practitioner.000.ndjson"),
        str(extra),
        "--practice",
        "oak-clinic",
    )
    assert report["resources"] == {"Patient": 13, "Appointment": 1}
    assert report["skipped"] == {"resource_type:Practitioner": 43}
    assert report["dead_letters"] == 1

    oak = b"oak-clinic|"
    patients = topic_view(kafka_bootstrap, ns, "patients", "oak-clinic")
    assert live(patients) == {oak + phone(p).encode() for p in synthea}
    assert sum(v["deceased"] for v in patients.values()) == 3
    appointment_key = oak + phone(synthea[2]).encode() + b"|s-appt"
    assert live(topic_view(kafka_bootstrap, ns, "appointments", "oak-clinic")) == {appointment_key}

    # A later Bulk Data `deleted` file, in another process: the state file says which keys.
    deleted = tmp_path / "deleted.ndjson"
    deleted.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": f"Patient/{synthea[2]['id']}"}}],
            }
        )
        + "\n"
    )
    report = run_json(processes, "ehr", "import", str(deleted), "--practice", "oak-clinic")
    assert report["published"] == {"patient_tombstones": 1, "appointment_tombstones": 1}
    assert patients.keys() == topic_view(kafka_bootstrap, ns, "patients", "oak-clinic").keys()
    assert topic_view(kafka_bootstrap, ns, "patients", "oak-clinic")[oak + phone(synthea[2]).encode()] is None
    assert live(topic_view(kafka_bootstrap, ns, "appointments", "oak-clinic")) == set()

    # The state file lost: rebuilt from the compacted topics, so a deletion still finds its key.
    state = Path(service_env["RINGBACK_STATE_DIR"]) / "ehr" / "oak-clinic.json"
    assert state.exists() and (state.stat().st_mode & 0o777) == 0o600
    state.unlink()
    deleted.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": f"Patient/{synthea[5]['id']}"}}],
            }
        )
        + "\n"
    )
    done = processes.run("ehr", "import", str(deleted), "--practice", "oak-clinic", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rebuilt 12 entries from the topics" in done.stderr
    assert json.loads(done.stdout)["published"] == {"patient_tombstones": 1}
    assert live(topic_view(kafka_bootstrap, ns, "patients", "oak-clinic")) == {
        oak + phone(p).encode() for p in synthea
    } - {oak + phone(synthea[2]).encode(), oak + phone(synthea[5]).encode()}


def test_import_counts_its_dead_letters_in_the_shared_counter(practices, kafka_bootstrap, service_env, tmp_path):
    """`ringback ehr import` / `sync` are one-shot commands (nothing scrapes them), so this
    runs the import in-process on the real broker and reads the default registry: each
    dead letter written is one more `ringback_dead_letters_total{source}`."""
    from prometheus_client import REGISTRY

    from ringback.config.settings import Settings
    from ringback.sources.ehr import fhir

    ns = service_env["RINGBACK_NAMESPACE"]
    env = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        ringback_namespace=ns,
        ringback_partitions=PARTITIONS,
        ringback_state_dir=service_env["RINGBACK_STATE_DIR"],
        ringback_secrets_dir=service_env["RINGBACK_SECRETS_DIR"],
    )
    bulk = tmp_path / "Patient.000.ndjson"
    bulk.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "resourceType": "Patient",
                        "id": "ok",
                        "active": True,
                        "telecom": [{"system": "phone", "value": "(617) 555-0199"}],
                    }
                ),
                json.dumps(
                    {
                        "resourceType": "Patient",
                        "id": "bad-phone",
                        "active": True,
                        "telecom": [{"system": "phone", "value": "12"}],
                    }
                ),
                "{malformed",
            ]
        )
        + "\n"
    )
    sources = ("fhir-ndjson:Patient", "fhir-ndjson:ndjson")

    def counted(source: str) -> float:
        return REGISTRY.get_sample_value("ringback_dead_letters_total", {"source": source}) or 0.0

    before = {s: counted(s) for s in sources}
    report = fhir.run_import(env, [bulk], "oak-clinic")
    assert report.dead_letters == 2
    dead = [codec.decode("dead_letter", r["value"]) for r in read_topic(kafka_bootstrap, f"{ns}.dead-letters")]
    assert sorted(d["source"] for d in dead) == sorted(sources)
    assert {s: counted(s) - before[s] for s in sources} == {s: 1 for s in sources}
    assert live(topic_view(kafka_bootstrap, ns, "patients", "oak-clinic")) == {b"oak-clinic|+16175550199"}
