"""`ringback ehr keys` and `ringback ehr sync` with SMART Backend Services on the real
broker: the FHIR server sits behind a token endpoint that verifies every client assertion
and refuses requests without a live token (tests/support/smart_auth_server.py)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import wait_for
from tests.sources.ehr.test_fhir_client import FhirTestServer, seed_harbour
from tests.sources.ehr.test_fhir_sync import live, practices, run_json, topic_view  # noqa: F401 - practices: a fixture
from tests.support.smart_auth_server import SmartAuthServer

pytestmark = pytest.mark.integration

CLIENT_ID = "ringback-harbour"
HARBOUR = b"harbour-gp|"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


@pytest.fixture
def fhir_server():
    server = FhirTestServer()
    yield server
    server.close()


@pytest.fixture
def auth_server(fhir_server):
    server = SmartAuthServer(fhir_server.base, expires_in=120)
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


def test_smart_sync_publishes_survives_a_key_rotation_and_renews_once(
    practices,  # noqa: F811 - the fixture imported above
    fhir_server,
    auth_server,
    processes,
    kafka_bootstrap,
    service_env,
):
    ns = service_env["RINGBACK_NAMESPACE"]
    seed_harbour(fhir_server)
    sync = ("ehr", "sync", "--base-url", auth_server.base, "--practice", "harbour-gp", "--page-size", "2")
    smart = ("--smart-client-id", CLIENT_ID)

    # Without a token the FHIR side refuses: the sync fails and says so.
    anonymous = processes.run(*sync, timeout=120)
    assert anonymous.returncode != 0 and "HTTP 401" in anonymous.stderr

    first = new_key(processes, service_env, "RS384")
    auth_server.register(CLIENT_ID, first)
    report = run_json(processes, *sync, *smart)
    assert report["published"]["patient_records"] == 5
    assert len(auth_server.grants) == 1 and auth_server.grants[0].kid == first["keys"][0]["kid"]
    assert auth_server.grants[0].scope == "system/Patient.rs system/Appointment.rs system/Flag.rs"
    patients = topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")
    assert HARBOUR + b"+61412345678" in live(patients)

    # Rotation: a new key (ES384) signs at once; until the EHR has the new JWKS it is refused, by kid.
    rotated = new_key(processes, service_env, "ES384")
    assert [k["kid"] for k in rotated["keys"]][0] == first["keys"][0]["kid"] and len(rotated["keys"]) == 2
    refused = processes.run(*sync, *smart, timeout=120)
    assert refused.returncode != 0
    assert f"kid '{rotated['keys'][1]['kid']}' is not in the client's registered JWKS" in refused.stderr
    auth_server.register(CLIENT_ID, rotated)
    fhir_server.update("Patient", "example", active=False)
    report = run_json(processes, *sync, *smart)
    assert auth_server.grants[-1].kid == rotated["keys"][1]["kid"]
    assert report["patients_inactive"] == 1

    # `--every`, the client id from the environment: one token serves every run until the EHR
    # ends it early; then exactly one renewal.
    grants = len(auth_server.grants)
    processes.start("ehr-sync", *sync, "--every", "1", env={"RINGBACK_EHR_SMART_CLIENT_ID": CLIENT_ID})

    def runs() -> int:
        return sum(line.startswith("{") for line in processes.log("ehr-sync").splitlines())

    wait_for(lambda: runs() >= 2, 90, message="two sync runs")
    assert len(auth_server.grants) == grants + 1
    auth_server.expire_tokens()
    multi = fhir_server.resources[("Patient", "multi-phone")]
    fhir_server.update(
        "Patient", "multi-phone", telecom=[*multi["telecom"], {"system": "phone", "value": "0400 111 222"}]
    )
    wait_for(
        lambda: HARBOUR + b"+61400111222" in live(topic_view(kafka_bootstrap, ns, "patients", "harbour-gp")),
        90,
        message="the change read with the renewed token",
    )
    ran = runs()
    wait_for(lambda: runs() >= ran + 1, 60, message="one more run")
    assert len(auth_server.grants) == grants + 2, "one renewal after the early expiry"
    assert auth_server.fhir_401 == 1 + 1  # the anonymous run's, and the expired token's single retry
    assert auth_server.refusals == [
        "kid " + repr(rotated["keys"][1]["kid"]) + " is not in the client's registered JWKS"
    ]
    assert "EHR sync run failed" not in processes.log("ehr-sync")
