"""`ringback ehr keys`, `ehr sync` and `ehr export` with SMART Backend Services on the real
broker, against HAPI FHIR behind a token endpoint that verifies every client assertion and
refuses FHIR requests without a live token (tests/support/smart_auth_server.py): searches,
next links, the export's status URL and its output files all go through that check."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter

import pytest

from tests.conftest import wait_for
from tests.sources.ehr.test_fhir_client import seed_harbour
from tests.sources.ehr.test_fhir_sync import live, practices, run_json, topic_view  # noqa: F401 - practices: a fixture
from tests.sources.topic_records import read_topic
from tests.support.smart_auth_server import SmartAuthServer

pytestmark = pytest.mark.integration

CLIENT_ID = "ringback-harbour"
SCOPE = "system/Patient.rs system/Appointment.rs system/Flag.rs"  # what ehr sync and ehr export ask by default
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}
HARBOUR = b"harbour-gp|"
PATIENTS = {HARBOUR + p for p in (b"+61355556473", b"+61334105613", b"+61412345678", b"+61391234567", b"+61413000111")}
APPOINTMENTS = {
    HARBOUR + b"+61355556473|example",
    HARBOUR + b"+61334105613|example",
    HARBOUR + b"+61355556473|2docs",
    HARBOUR + b"+61334105613|2docs",
    HARBOUR + b"+61412345678|appt-multi",
    HARBOUR + b"+61391234567|appt-multi",
}
FLAGS = {
    HARBOUR + b"+61355556473|example-encounter",
    HARBOUR + b"+61334105613|example-encounter",
    HARBOUR + b"+61355556473|callback-1",
    HARBOUR + b"+61334105613|callback-1",
}
EXAMPLE_PHONES = {HARBOUR + b"+61355556473", HARBOUR + b"+61334105613"}  # HL7 Patient/example's


@pytest.fixture
def auth_server(hapi):
    server = SmartAuthServer(hapi.base, expires_in=120)
    yield server
    server.close()


def new_key(processes, service_env, alg: str) -> dict:
    """`ringback ehr keys` into the test's secrets folder; the printed public JWKS."""
    done = processes.run("ehr", "keys", "--alg", alg)
    assert done.returncode == 0, done.stderr
    jwks = json.loads(done.stdout)
    assert all(not PRIVATE_MEMBERS & set(k) for k in jwks["keys"]), "a private key member was printed"
    path = os.path.join(service_env["RINGBACK_SECRETS_DIR"], "RINGBACK_EHR_SMART_KEY")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return jwks


def assert_published(bootstrap: str, ns: str) -> None:
    """The seeded harbour resources as live keyed records, each in its caller's partition."""
    assert live(topic_view(bootstrap, ns, "patients", "harbour-gp")) == PATIENTS
    assert live(topic_view(bootstrap, ns, "appointments", "harbour-gp")) == APPOINTMENTS
    assert live(topic_view(bootstrap, ns, "flags", "harbour-gp")) == FLAGS


def keys_on(bootstrap: str, ns: str) -> dict[str, Counter]:
    """How many records each key has on each EHR topic now."""
    return {
        s: Counter(r["key"] for r in read_topic(bootstrap, f"{ns}.{s}")) for s in ("patients", "appointments", "flags")
    }


def test_smart_sync_survives_a_key_rotation_and_renews_a_token_expired_mid_run(
    practices,  # noqa: F811 - the fixture imported above
    hapi,
    auth_server,
    processes,
    kafka_bootstrap,
    service_env,
):
    ns = service_env["RINGBACK_NAMESPACE"]
    seed_harbour(hapi)
    sync = ("ehr", "sync", "--base-url", auth_server.base, "--practice", "harbour-gp", "--page-size", "2")
    smart = ("--smart-client-id", CLIENT_ID)

    # Without a token the FHIR side refuses: the sync fails and says so.
    anonymous = processes.run(*sync, timeout=120)
    assert anonymous.returncode != 0 and "HTTP 401" in anonymous.stderr
    assert auth_server.fhir_401 == 1

    first = new_key(processes, service_env, "RS384")
    auth_server.register(CLIENT_ID, first)
    report = run_json(processes, *sync, *smart)
    assert report["resources"] == {"Patient": 4, "Appointment": 4, "Flag": 3}
    assert_published(kafka_bootstrap, ns)
    assert [(g.kid, g.scope) for g in auth_server.grants] == [(first["keys"][0]["kid"], SCOPE)]
    assert any("_getpages=" in path for path in auth_server.served)  # HAPI's next links came back through the check

    # Rotation: a new key (ES384) signs at once; until the EHR has the new JWKS it is refused, by kid.
    rotated = new_key(processes, service_env, "ES384")
    assert [k["kid"] for k in rotated["keys"]][0] == first["keys"][0]["kid"] and len(rotated["keys"]) == 2
    refused = processes.run(*sync, *smart, timeout=120)
    assert refused.returncode != 0
    assert f"kid '{rotated['keys'][1]['kid']}' is not in the client's registered JWKS" in refused.stderr
    auth_server.register(CLIENT_ID, rotated)
    hapi.update("Patient", "example", active=False)
    report = run_json(processes, *sync, *smart)
    assert auth_server.grants[-1].kid == rotated["keys"][1]["kid"]
    assert report["patients_inactive"] == 1
    assert live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")) == PATIENTS - EXAMPLE_PHONES

    # The EHR ends the token after the run's second FHIR request: the third is refused once,
    # the token renewed once, that request retried, and the run completes.
    multi = hapi.resources[("Patient", "multi-phone")]
    hapi.update("Patient", "multi-phone", telecom=[*multi["telecom"], {"system": "phone", "value": "0400 111 222"}])
    token_requests, refused_401 = auth_server.token_requests, auth_server.fhir_401
    auth_server.expire_after(2)
    run_json(processes, *sync, *smart)
    assert auth_server.token_requests == token_requests + 2, "one token for the run, one renewal"
    assert auth_server.fhir_401 == refused_401 + 1
    assert auth_server.refusals == [f"kid {rotated['keys'][1]['kid']!r} is not in the client's registered JWKS"]
    assert HARBOUR + b"+61400111222" in live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp"))

    # `--every`, the client id from the environment: one token serves every run (each run
    # is a new event loop in the same process).
    log = processes.log_dir / "ehr-sync.log"  # an artifact: earlier sessions' lines stay at its start
    earlier = log.stat().st_size if log.exists() else 0

    def this_run() -> str:
        with open(log, "rb") as fh:
            fh.seek(earlier)
            return fh.read().decode(errors="replace")

    def runs() -> int:
        return sum(line.startswith("{") for line in this_run().splitlines())

    grants = len(auth_server.grants)
    processes.start("ehr-sync", *sync, "--every", "1", env={"RINGBACK_EHR_SMART_CLIENT_ID": CLIENT_ID})
    wait_for(lambda: runs() >= 3, 90, message="three sync runs")
    assert len(auth_server.grants) == grants + 1
    assert "EHR sync run failed" not in this_run()


def test_smart_incremental_bulk_export_publishes_each_change_once_and_renews_mid_run(
    practices,  # noqa: F811 - the fixture imported above
    hapi,
    auth_server,
    processes,
    kafka_bootstrap,
    service_env,
):
    ns = service_env["RINGBACK_NAMESPACE"]
    seed_harbour(hapi)
    auth_server.register(CLIENT_ID, new_key(processes, service_env, "ES384"))
    export = ("ehr", "export", "--base-url", auth_server.base, "--practice", "harbour-gp", "--poll-max", "1")
    export += ("--smart-client-id", CLIENT_ID)

    full = run_json(processes, *export)
    assert full["since"] is None and full["transaction_time"]
    assert full["resources"] == {"Patient": 4, "Appointment": 4, "Flag": 3}
    assert full["outputs"] == full["outputs_published"] == 3
    assert_published(kafka_bootstrap, ns)
    assert auth_server.token_requests == 1 and auth_server.fhir_401 == 0
    # HAPI's manifest says requiresAccessToken: the files were fetched through the check, with the token.
    assert sum(path.startswith("/fhir/Binary/") for path in auth_server.served) == 3

    # The EHR changes; the token ends right after the next export's kick-off: its first
    # status poll is refused once, the token renewed once, and the export completes.
    hapi.update("Patient", "example", active=False)
    hapi.update("Appointment", "appt-multi", status="cancelled")
    before = keys_on(kafka_bootstrap, ns)
    auth_server.expire_after(1)
    again = run_json(processes, *export)
    assert again["since"] == full["transaction_time"]
    assert again["resources"] == {"Patient": 1, "Appointment": 1}
    assert auth_server.token_requests == 1 + 2 and auth_server.fhir_401 == 1
    assert auth_server.refusals == []

    # What changed, each key once: Patient/example is inactive, so its phones and the
    # appointments and flags keyed by them are tombstoned; appt-multi is cancelled.
    after = keys_on(kafka_bootstrap, ns)
    assert {suffix: after[suffix] - before[suffix] for suffix in after} == {
        "patients": Counter(EXAMPLE_PHONES),
        "appointments": Counter(APPOINTMENTS),
        "flags": Counter(FLAGS),
    }
    assert live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")) == PATIENTS - EXAMPLE_PHONES
    assert live(topic_view(kafka_bootstrap, ns, "appointments", "harbour-gp")) == set()
    assert live(topic_view(kafka_bootstrap, ns, "flags", "harbour-gp")) == set()
