"""The FHIR REST client and the sync against a real local HTTP server (no broker: a
recording producer stands in for AckedProducer).

`FhirTestServer` is also used by the integration tests. It behaves like HAPI FHIR where
it matters here: the server stamps `meta.versionId` / `meta.lastUpdated`, search honours
`_lastUpdated=ge…` and `_count`, pages are served from a snapshot behind an opaque
`_getpages` token in `Bundle.link` `next`, and `[type]/_history?_since=` lists versions
newest first with DELETE entries (`410 Gone`).
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec
from ringback.sources.ehr import fhir
from ringback.sources.ehr.publisher import StateStore
from tests.sources.ehr.test_fhir_mapping import callback_flag, hl7, synthea_patients
from tests.sources.recording_producer import RecordingProducer


class FhirTestServer:
    def __init__(self, start: str = "2026-01-05T10:00:00+00:00", token: str | None = None) -> None:
        self._lock = threading.Lock()
        self._now = datetime.fromisoformat(start)
        self.resources: dict[tuple[str, str], dict] = {}
        self.versions: list[dict] = []  # history entries, oldest first
        self.requests: list[str] = []
        self.history_supported = True
        self.token = token
        self._pages: dict[str, list[dict]] = {}
        self._version = itertools.count(1)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._send(401, _outcome("unauthorized"))
                status, body = server.handle(self.path)
                self._send(status, body)

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- writes (what the EHR does)
    def _tick(self) -> str:
        self._now += timedelta(seconds=1)
        return self._now.isoformat(timespec="milliseconds")

    def put(self, resource: dict) -> dict:
        with self._lock:
            stored = copy.deepcopy(resource)
            stored.pop("text", None)
            when = self._tick()
            stored["meta"] = {**stored.get("meta", {}), "versionId": str(next(self._version)), "lastUpdated": when}
            key = (stored["resourceType"], stored["id"])
            self.resources[key] = stored
            self.versions.append({"type": key[0], "id": key[1], "method": "PUT", "when": when, "resource": stored})
            return stored

    def delete(self, resource_type: str, rid: str) -> None:
        with self._lock:
            del self.resources[(resource_type, rid)]
            self.versions.append({"type": resource_type, "id": rid, "method": "DELETE", "when": self._tick()})

    def update(self, resource_type: str, rid: str, **changes) -> dict:
        resource = copy.deepcopy(self.resources[(resource_type, rid)])
        resource.update(changes)
        return self.put(resource)

    # -- reads
    def handle(self, path: str) -> tuple[int, dict]:
        url = urlsplit(path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p][1:]  # after "fhir"
        count = int(params.get("_count", "10"))
        with self._lock:
            if not parts and "_getpages" in params:
                snapshot = self._pages.get(params["_getpages"])
                if snapshot is None:
                    return 410, _outcome("page token expired")
                return 200, self._page(snapshot, int(params.get("_getpagesoffset", "0")), count, params["_getpages"])
            if len(parts) == 1 and parts[0] in ("Patient", "Appointment", "Flag", "Practitioner"):
                since = _instant(params["_lastUpdated"][2:]) if "_lastUpdated" in params else None
                assert "_lastUpdated" not in params or params["_lastUpdated"].startswith("ge")
                found = sorted(
                    (
                        r
                        for (t, _), r in self.resources.items()
                        if t == parts[0] and (since is None or _instant(r["meta"]["lastUpdated"]) >= since)
                    ),
                    key=lambda r: (r["meta"]["lastUpdated"], r["id"]),
                )
                entries = [
                    {
                        "fullUrl": f"{self.base}/{r['resourceType']}/{r['id']}",
                        "resource": r,
                        "search": {"mode": "match"},
                    }
                    for r in found
                ]
                return 200, self._start(entries, "searchset", count)
            if len(parts) == 2 and parts[1] == "_history":
                if not self.history_supported:
                    return 404, _outcome("history not supported")
                since = _instant(params["_since"]) if "_since" in params else None
                versions = [
                    v
                    for v in reversed(self.versions)
                    if v["type"] == parts[0] and (since is None or _instant(v["when"]) >= since)
                ]
                entries = []
                for v in versions:
                    entry = {
                        "fullUrl": f"{self.base}/{v['type']}/{v['id']}",
                        "request": {"method": v["method"], "url": f"{v['type']}/{v['id']}"},
                        "response": {
                            "status": "410 Gone" if v["method"] == "DELETE" else "200 OK",
                            "lastModified": v["when"],
                        },
                    }
                    if v["method"] != "DELETE":
                        entry["resource"] = v["resource"]
                    entries.append(entry)
                return 200, self._start(entries, "history", count)
        return 404, _outcome("unknown path")

    def _start(self, entries: list[dict], bundle_type: str, count: int) -> dict:
        token = uuid.uuid4().hex
        self._pages[token] = [{"type": bundle_type}, *entries]
        return self._page(self._pages[token], 0, count, token)

    def _page(self, snapshot: list[dict], offset: int, count: int, token: str) -> dict:
        head, entries = snapshot[0], snapshot[1:]
        bundle = {
            "resourceType": "Bundle",
            "id": uuid.uuid4().hex,
            "type": head["type"],
            "total": len(entries),
            "link": [{"relation": "self", "url": f"{self.base}?_getpages={token}&_getpagesoffset={offset}"}],
            "entry": entries[offset : offset + count],
        }
        if offset + count < len(entries):
            bundle["link"].append(
                {
                    "relation": "next",
                    "url": f"{self.base}?_getpages={token}"
                    f"&_getpagesoffset={offset + count}&_count={count}&_bundletype={head['type']}",
                }
            )
        return bundle


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _outcome(text: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


@pytest.fixture
def server():
    srv = FhirTestServer()
    yield srv
    srv.close()


async def collect(aiter) -> list:
    return [x async for x in aiter]


# ---------------------------------------------------------------------------------- client
async def test_search_follows_next_links_through_every_page(server):
    for p in synthea_patients()[:5]:
        server.put(p)
    client = fhir.FhirClient(server.base, page_size=2)
    try:
        found = await collect(client.search("Patient", None))
    finally:
        await client.close()
    assert [r["id"] for r in found] == [p["id"] for p in synthea_patients()[:5]]
    assert server.requests[0] == "/fhir/Patient?_count=2"
    assert sum("_getpages=" in r for r in server.requests) == 2  # pages 2 and 3


async def test_search_since_uses_last_updated_ge(server):
    for p in synthea_patients()[:3]:
        server.put(p)
    cut = server.put(synthea_patients()[3])["meta"]["lastUpdated"]
    server.put(synthea_patients()[4])
    client = fhir.FhirClient(server.base, page_size=10)
    try:
        found = await collect(client.search("Patient", cut))
    finally:
        await client.close()
    assert [r["id"] for r in found] == [synthea_patients()[3]["id"], synthea_patients()[4]["id"]]
    assert "_lastUpdated=ge2026-01-05T10%3A00%3A04.000%2B00%3A00" in server.requests[0]


async def test_deletions_from_type_history(server):
    server.put(hl7("Patient-example"))
    server.put(hl7("Patient-pat1"))
    since = server.put(synthea_patients()[0])["meta"]["lastUpdated"]
    server.delete("Patient", "pat1")
    client = fhir.FhirClient(server.base)
    try:
        found = await collect(client.deletions("Patient", since))
    finally:
        await client.close()
    assert [(t, i) for t, i, _ in found] == [("Patient", "pat1")]


async def test_errors_are_fhir_errors(server):
    client = fhir.FhirClient(server.base)
    try:
        with pytest.raises(fhir.FhirError, match="HTTP 404"):
            await collect(client.search("Observation", None))
        server.history_supported = False
        with pytest.raises(fhir.FhirError, match="HTTP 404"):
            await collect(client.deletions("Patient", "2026-01-01T00:00:00Z"))
    finally:
        await client.close()


async def test_bearer_token_is_sent():
    srv = FhirTestServer(token="s3cret")
    try:
        srv.put(hl7("Patient-pat1"))
        anonymous = fhir.FhirClient(srv.base)
        with pytest.raises(fhir.FhirError, match="HTTP 401"):
            await collect(anonymous.search("Patient", None))
        await anonymous.close()
        client = fhir.FhirClient(srv.base, token="s3cret")
        assert len(await collect(client.search("Patient", None))) == 1
        await client.close()
    finally:
        srv.close()


# ---------------------------------------------------------------------------------- sync, no broker
def seed_harbour(server: FhirTestServer) -> None:
    """HL7 examples (an Australian patient with several phones, one without) plus resources
    modelled on them: invalid numbers, a callback flag, a second patient's appointment."""
    for name in (
        "Patient-example",
        "Patient-pat1",
        "Appointment-example",
        "Appointment-2docs",
        "Appointment-examplereq",
        "Flag-example",
        "Flag-example-encounter",
    ):
        server.put(hl7(name))
    server.put(
        {
            "resourceType": "Patient",
            "id": "multi-phone",
            "active": True,
            "name": [{"family": "Nguyen", "given": ["Lan"]}],
            "telecom": [
                {"system": "phone", "value": "0412 345 678", "use": "mobile"},
                {"system": "phone", "value": "(03) 9123 4567", "use": "home"},
                {"system": "sms", "value": "+61 412 345 678"},
                {"system": "email", "value": "lan@example.org"},
            ],
        }
    )
    server.put(
        {
            "resourceType": "Patient",
            "id": "bad-phones",
            "active": True,
            "telecom": [
                {"system": "phone", "value": "12"},
                {"system": "phone", "value": "ask at reception"},
                {"system": "phone", "value": "0413 000 111", "use": "mobile"},
            ],
        }
    )
    server.put(callback_flag(id="callback-1"))
    server.put(
        {
            **hl7("Appointment-example"),
            "id": "appt-multi",
            "start": "2026-01-20T23:00:00Z",
            "participant": [{"actor": {"reference": "Patient/multi-phone"}, "status": "accepted"}],
        }
    )


def make_sync(tmp_path, producer, practice="harbour-gp", region="AU") -> fhir.EhrSync:
    env = Settings(ringback_namespace="unit", ringback_partitions=4, ringback_state_dir=tmp_path)
    return fhir.EhrSync(env, producer, practice, region, clock=ManualClock(1_790_000_000.0))


def compacted(producer: RecordingProducer, suffix: str, schema: str) -> dict[bytes, dict | None]:
    out = {}
    for key, value, _ in producer.records(suffix):
        out[key] = codec.decode(schema, value) if value is not None else None
    return out


async def test_sync_publishes_keyed_records_and_rejects_with_reasons(server, tmp_path):
    seed_harbour(server)
    producer = RecordingProducer()
    client = fhir.FhirClient(server.base, page_size=2)
    report = await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=False)
    await client.close()
    patients = compacted(producer, "patients", "patient")
    assert set(patients) == {
        b"harbour-gp|+61355556473",
        b"harbour-gp|+61334105613",
        b"harbour-gp|+61412345678",
        b"harbour-gp|+61391234567",
        b"harbour-gp|+61413000111",
    }
    assert report.patients_without_phone == 1 and report.phones_rejected == 2
    dead = [codec.decode("dead_letter", v) for _, v, _ in producer.records("dead-letters")]
    assert sorted(d["reason"] for d in dead) == [
        "Patient/bad-phones telecom[0]: too short",
        "Patient/bad-phones telecom[1]: not a phone number (no digits that form a number)",
    ]
    assert all(d["source"] == "fhir:Patient" and json.loads(d["raw"])["id"] == "bad-phones" for d in dead)
    # Partition = partition_for(practice|phone) for every record, whatever its key.
    from ringback.kafka.topics import join_key, partition_for

    for topic, key, _value, _, partition in producer.sent:
        if topic.endswith((".patients", ".appointments", ".flags")):
            phone = key.decode().split("|")[1]
            assert partition == partition_for(join_key("harbour-gp", phone), 4)
    flags = compacted(producer, "flags", "flag")
    assert flags[b"harbour-gp|+61355556473|callback-1"]["callback_requested"] is True
    assert flags[b"harbour-gp|+61355556473|example"] is None  # the inactive HL7 flag
    # State saved with the cursor: the next run is incremental.
    state = StateStore(make_sync(tmp_path, producer).env, "harbour-gp").load()
    assert state["cursor"]["Patient"] == server.resources[("Patient", "bad-phones")]["meta"]["lastUpdated"]
    assert report.skipped["appointment_without_start"] == 1


async def test_full_sync_sweeps_what_the_server_no_longer_has(server, tmp_path):
    seed_harbour(server)
    producer = RecordingProducer()
    client = fhir.FhirClient(server.base, page_size=50)
    await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=True)
    server.history_supported = False  # a server without history: deletions only by a full sweep
    server.delete("Patient", "bad-phones")
    server.delete("Appointment", "appt-multi")
    incremental = await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=False)
    assert incremental.skipped["history_unavailable:Patient"] == 1
    assert compacted(producer, "patients", "patient")[b"harbour-gp|+61413000111"] is not None
    report = await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=True)
    await client.close()
    assert report.swept == {"Patient": 1, "Appointment": 1}
    assert compacted(producer, "patients", "patient")[b"harbour-gp|+61413000111"] is None
    appts = compacted(producer, "appointments", "appointment")
    assert appts[b"harbour-gp|+61412345678|appt-multi"] is None


async def test_ndjson_import_of_synthea_with_deleted_bundle_and_a_bad_line(tmp_path):
    vendor = tmp_path / "bulk"
    vendor.mkdir()
    extra = vendor / "Appointment.000.ndjson"
    pid = synthea_patients()[2]["id"]
    extra.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        **hl7("Appointment-example"),
                        "id": "s-appt",
                        "start": "2026-02-01T15:00:00Z",
                        "participant": [{"actor": {"reference": f"Patient/{pid}"}}],
                    }
                ),
                "{not json",
                json.dumps(
                    {
                        "resourceType": "Bundle",
                        "type": "transaction",
                        "entry": [{"request": {"method": "DELETE", "url": f"Patient/{synthea_patients()[3]['id']}"}}],
                    }
                ),
            ]
        )
        + "\n"
    )
    from tests.sources.ehr.test_fhir_mapping import VENDOR

    producer = RecordingProducer()
    report = await fhir.import_ndjson(
        make_sync(tmp_path, producer, "oak-clinic", "US"),
        [extra, VENDOR / "synthea_Practitioner.000.ndjson", VENDOR / "synthea_Patient.000.ndjson"],
    )
    patients = compacted(producer, "patients", "patient")
    assert len(patients) == 13
    assert sum(1 for v in patients.values() if v and v["deceased"]) == 3
    assert patients[b"oak-clinic|+15554788993"] is not None
    deleted_phone = "+1" + "".join(c for c in synthea_patients()[3]["telecom"][0]["value"] if c.isdigit())
    assert patients[f"oak-clinic|{deleted_phone}".encode()] is None
    assert report.skipped["resource_type:Practitioner"] == 43
    assert report.dead_letters == 1 and "line 2: not a JSON object" in report.rejections[0]
    appts = compacted(producer, "appointments", "appointment")
    phone = "+1" + "".join(c for c in synthea_patients()[2]["telecom"][0]["value"] if c.isdigit())
    assert appts[f"oak-clinic|{phone}|s-appt".encode()]["patient_id"] == pid


def test_one_ehr_process_per_practice_at_a_time(tmp_path):
    env = Settings(ringback_state_dir=tmp_path)
    first, second = StateStore(env, "oak-clinic"), StateStore(env, "oak-clinic")
    first.lock()
    with pytest.raises(RuntimeError, match="another `ringback ehr` process"):
        second.lock()
    StateStore(env, "harbour-gp").lock()  # another practice is independent
    first.unlock()
    second.lock()
    second.unlock()


async def test_a_batch_that_failed_is_recovered_from_the_write_ahead_state(server, tmp_path):
    """The state is written before a batch is published: a crash (here: the broker refusing)
    can leave neither a published key the state does not know nor a tombstone never sent."""
    seed_harbour(server)
    client = fhir.FhirClient(server.base, page_size=50)
    producer = RecordingProducer()
    await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=False)
    multi = server.resources[("Patient", "multi-phone")]
    server.update("Patient", "multi-phone", telecom=[t for t in multi["telecom"] if t.get("use") != "home"])
    failing = RecordingProducer()
    failing.refuse = lambda topic, key, value: value is None  # tombstones are not acknowledged
    with pytest.raises(BrokerUnavailable):
        await fhir.sync_rest(make_sync(tmp_path, failing), client, since=None, full=False, overlap_s=0)
    state = StateStore(make_sync(tmp_path, failing).env, "harbour-gp").load()
    assert {o["key"] for o in state["pending_tombstones"]} == {
        "harbour-gp|+61391234567",
        "harbour-gp|+61391234567|appt-multi",
    }
    assert state["patients"]["multi-phone"]["phones"] == ["+61412345678"]
    recovered = RecordingProducer()
    await fhir.sync_rest(make_sync(tmp_path, recovered), client, since=None, full=False, overlap_s=0)
    await client.close()
    assert compacted(recovered, "patients", "patient")[b"harbour-gp|+61391234567"] is None
    assert compacted(recovered, "appointments", "appointment")[b"harbour-gp|+61391234567|appt-multi"] is None
    assert StateStore(make_sync(tmp_path, recovered).env, "harbour-gp").load()["pending_tombstones"] == []


async def test_bad_numbers_are_dead_lettered_once_per_version_of_the_telecom(server, tmp_path):
    seed_harbour(server)
    client = fhir.FhirClient(server.base, page_size=50)
    producer = RecordingProducer()
    first = await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=True)
    again = await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=True)
    assert first.dead_letters == 2 and again.dead_letters == 0
    assert first.phones_rejected == again.phones_rejected == 2  # still reported every time
    bad = server.resources[("Patient", "bad-phones")]
    server.update("Patient", "bad-phones", telecom=[*bad["telecom"][1:], {"system": "phone", "value": "99"}])
    changed = await fhir.sync_rest(make_sync(tmp_path, producer), client, since=None, full=False, overlap_s=0)
    await client.close()
    assert changed.dead_letters == 2
    assert len(producer.records("dead-letters")) == 4
