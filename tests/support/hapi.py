"""HAPI FHIR (the reference Java FHIR server, JPA on in-memory H2) for the EHR tests.

`hapi_session` starts one server per test session on a free port (its jars come from
Maven Central, cached like the broker's: `ringback.dev.fhir_server`); `hapi` hands each
test that server emptied first (`$expunge` everything), with helpers that write what the
EHR would. tests/sources/ehr/conftest.py registers both for that folder; register them
in a conftest.py, not in each test module: a session fixture imported into two modules is
two fixtures, and the second would start a second server.
"""

from __future__ import annotations

import copy
import time

import httpx
import pytest

from ringback.dev.fhir_server import LocalFhirServer
from tests.conftest import free_port


class Hapi:
    """Writes to the server as the EHR would; `base` is the FHIR base URL the sync reads."""

    def __init__(self, server: LocalFhirServer) -> None:
        self.base = server.base
        self._http = httpx.Client(base_url=server.base + "/", timeout=60, headers={"Accept": "application/fhir+json"})
        self.resources: dict[tuple[str, str], dict] = {}

    def put(self, resource: dict) -> dict:
        """Create or update by id (HAPI stamps meta.versionId and meta.lastUpdated)."""
        body = copy.deepcopy(resource)
        body.pop("meta", None)
        response = self._http.put(
            f"{body['resourceType']}/{body['id']}", json=body, headers={"Content-Type": "application/fhir+json"}
        )
        assert response.status_code in (200, 201), response.text[:2000]
        stored = response.json()
        self.resources[(stored["resourceType"], stored["id"])] = stored
        # lastUpdated has millisecond resolution: writes one ms apart keep `ge` cursors exact.
        time.sleep(0.002)
        return stored

    def update(self, resource_type: str, rid: str, **changes) -> dict:
        resource = copy.deepcopy(self.resources[(resource_type, rid)])
        resource.update(changes)
        return self.put(resource)

    def delete(self, resource_type: str, rid: str) -> None:
        response = self._http.delete(f"{resource_type}/{rid}")
        assert response.status_code in (200, 204), response.text[:2000]
        self.resources.pop((resource_type, rid), None)

    def close(self) -> None:
        self._http.close()


@pytest.fixture(scope="session", name="hapi_session")
def hapi_session_fixture(tmp_path_factory):
    server = LocalFhirServer(free_port(), tmp_path_factory.mktemp("hapi") / "hapi.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="hapi")
def hapi_fixture(hapi_session):
    hapi_session.expunge_everything()
    client = Hapi(hapi_session)
    yield client
    client.close()
