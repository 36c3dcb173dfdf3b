"""SMART Backend Services: the client assertion, the keys, the token cache (an injected
clock, no sleeps), and the exchange against a token endpoint that verifies the assertion
with another JOSE implementation (tests/support/smart_auth_server.py), in front of the
local FHIR server."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid

import httpx
import jwt
import pytest

from ringback.clock import ManualClock
from ringback.sources.ehr import fhir, smart
from tests.sources.ehr.test_fhir_client import FhirTestServer, make_sync, seed_harbour
from tests.sources.recording_producer import RecordingProducer
from tests.support.smart_auth_server import SmartAuthServer

CLIENT_ID = "ringback-test-client"
TOKEN_URL = "https://ehr.example.org/oauth2/token"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def new_keys(tmp_path, *algs: str) -> tuple[list[smart.SigningKey], dict]:
    path = tmp_path / smart.KEY_SECRET
    jwks: dict = {}
    for alg in algs:
        jwks = smart.add_key(path, alg)
    return smart.parse_keys(path.read_text()), jwks


# ---------------------------------------------------------------------------------- assertion
@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_assertion_header_claims_and_lifetime(tmp_path, alg):
    keys, jwks = new_keys(tmp_path, alg)
    assertion = smart.client_assertion(keys[0], CLIENT_ID, TOKEN_URL, NOW)

    header = jwt.get_unverified_header(assertion)
    assert header == {"alg": alg, "kid": keys[0].kid, "typ": "JWT"}
    public = jwt.PyJWKSet.from_dict(jwks)[keys[0].kid]
    claims = jwt.decode(
        assertion, public, algorithms=[alg], audience=TOKEN_URL, options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert claims["iat"] == int(NOW)
    assert claims["exp"] - claims["iat"] == 300  # the most SMART allows
    other = jwt.decode(smart.client_assertion(keys[0], CLIENT_ID, TOKEN_URL, NOW), options={"verify_signature": False})
    assert other["jti"] != claims["jti"] and len(claims["jti"]) >= 32


def test_keys_file_is_private_and_rotation_appends_the_newest_last(tmp_path):
    path = tmp_path / "secrets" / smart.KEY_SECRET
    first = smart.add_key(path, "RS384")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = smart.add_key(path, "ES384")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [k["kid"] for k in second["keys"]][0] == first["keys"][0]["kid"]
    assert [(k["kty"], k["alg"], k["use"]) for k in second["keys"]] == [("RSA", "RS384", "sig"), ("EC", "ES384", "sig")]
    for public in second["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(public)  # nothing private is printed
    keys = smart.parse_keys(path.read_text())
    assert [k.kid for k in keys] == [k["kid"] for k in second["keys"]]
    auth = smart.SmartAuth("https://ehr.example.org/fhir", CLIENT_ID, keys, "system/Patient.rs")
    assert auth.key.kid == second["keys"][1]["kid"]  # the newest signs
    assert list(tmp_path.joinpath("secrets").iterdir()) == [path]  # no temporary file left


def test_pem_keys_and_refused_keys(tmp_path):
    from joserfc import jwk

    rsa = jwk.RSAKey.generate_key(2048, private=True)
    ec = jwk.ECKey.generate_key("P-384", private=True)
    pems = (rsa.as_pem(private=True) + ec.as_pem(private=True)).decode()
    keys = smart.parse_keys(pems)
    assert [(k.alg, k.kid) for k in keys] == [("RS384", rsa.thumbprint()), ("ES384", ec.thumbprint())]
    one = smart.parse_keys(json.dumps({**ec.as_dict(private=True), "kid": "k-2026"}))
    assert (one[0].kid, one[0].alg) == ("k-2026", "ES384")

    p256 = jwk.ECKey.generate_key("P-256", private=True)
    with pytest.raises(smart.SmartError, match="cannot sign RS384 or ES384"):
        smart.parse_keys(p256.as_pem(private=True).decode())
    with pytest.raises(smart.SmartError, match="not an RSA or EC private key"):
        smart.parse_keys(json.dumps(rsa.as_dict(private=False)))
    with pytest.raises(smart.SmartError, match="does not fit"):
        smart.parse_keys(json.dumps({**rsa.as_dict(private=True), "alg": "ES384"}))
    with pytest.raises(smart.SmartError, match="holds no private key"):
        smart.parse_keys("not a key")


# ---------------------------------------------------------------------------------- token cache
def test_token_is_fresh_until_shortly_before_it_expires():
    token = smart.AccessToken.from_response({"access_token": "a", "token_type": "Bearer", "expires_in": 300}, NOW)
    assert token.expires_at == NOW + 300
    assert token.fresh(NOW + 239) and not token.fresh(NOW + 240)  # renewed 60 s early
    short = smart.AccessToken.from_response({"access_token": "b", "token_type": "bearer", "expires_in": 10}, NOW)
    assert short.fresh(NOW + 4.9) and not short.fresh(NOW + 5)  # a short token: at half its life
    default = smart.AccessToken.from_response({"access_token": "c", "token_type": "bearer"}, NOW)
    assert default.expires_at == NOW + 300
    with pytest.raises(smart.SmartError, match="not a bearer token"):
        smart.AccessToken.from_response({"access_token": "d", "token_type": "mac"}, NOW)
    with pytest.raises(smart.SmartError, match="without an access_token"):
        smart.AccessToken.from_response({"token_type": "bearer"}, NOW)


# ---------------------------------------------------------------------------------- against the verifying server
@pytest.fixture
def fhir_server():
    srv = FhirTestServer()
    yield srv
    srv.close()


@pytest.fixture
def auth_server(fhir_server):
    srv = SmartAuthServer(fhir_server.base, expires_in=10)
    yield srv
    srv.close()


async def collect(iterator) -> list:
    return [x async for x in iterator]


async def test_token_granted_cached_and_renewed_on_the_clock(tmp_path, fhir_server, auth_server):
    keys, jwks = new_keys(tmp_path, "ES384")
    auth_server.register(CLIENT_ID, jwks)
    fhir_server.put({"resourceType": "Patient", "id": "p1", "telecom": [{"system": "phone", "value": "0412 345 678"}]})
    clock = ManualClock(time.time())
    auth = smart.SmartAuth(auth_server.base, CLIENT_ID, keys, "system/Patient.rs", clock)
    client = fhir.FhirClient(auth_server.base, auth=auth)
    try:
        for _ in range(3):
            assert [p["id"] for p in await collect(client.search("Patient", None))] == ["p1"]
        assert auth_server.token_requests == 1 and auth.token_requests == 1
        assert auth.token_url == auth_server.token_url  # discovered
        grant = auth_server.grants[0]
        assert (grant.client_id, grant.kid, grant.scope) == (CLIENT_ID, keys[0].kid, "system/Patient.rs")

        clock.advance(4.9)  # a 10 s token is renewed at half its life
        await collect(client.search("Patient", None))
        assert auth_server.token_requests == 1
        clock.advance(0.2)
        await collect(client.search("Patient", None))
        assert auth_server.token_requests == 2 and auth_server.refusals == []
        assert auth_server.fhir_401 == 0
    finally:
        await client.close()


async def exchange(auth_server, assertion: str) -> smart.AccessToken:
    async with httpx.AsyncClient() as http:
        return await smart.request_token(http, auth_server.token_url, assertion, "system/Patient.rs", time.time())


async def test_refused_assertions_name_the_cause(tmp_path, auth_server):
    keys, jwks = new_keys(tmp_path, "RS384")
    auth_server.register(CLIENT_ID, jwks)
    key = keys[0]
    now = time.time()

    replayed = smart.client_assertion(key, CLIENT_ID, auth_server.token_url, now, jti=uuid.uuid4().hex)
    assert (await exchange(auth_server, replayed)).value
    with pytest.raises(smart.SmartError, match=r"HTTP 400 invalid_client: jti \w+ was already used \(replay\)"):
        await exchange(auth_server, replayed)

    wrong_aud = smart.client_assertion(key, CLIENT_ID, "https://elsewhere.example.org/token", now)
    with pytest.raises(smart.SmartError, match="invalid_client: aud is not the token endpoint"):
        await exchange(auth_server, wrong_aud)

    expired = smart.client_assertion(key, CLIENT_ID, auth_server.token_url, now - 400)
    with pytest.raises(smart.SmartError, match=r"invalid_client: the assertion has expired \(exp\)"):
        await exchange(auth_server, expired)

    stranger, _ = new_keys(tmp_path / "other", "RS384")
    unknown = smart.client_assertion(stranger[0], CLIENT_ID, auth_server.token_url, now)
    with pytest.raises(smart.SmartError, match=f"invalid_client: kid '{stranger[0].kid}' is not in the client's"):
        await exchange(auth_server, unknown)

    # The same kid with another key: the signature check, not the kid lookup, refuses it.
    forged = smart.SigningKey(kid=key.kid, alg="RS384", key=stranger[0].key)
    with pytest.raises(smart.SmartError, match="signature does not verify"):
        await exchange(auth_server, smart.client_assertion(forged, CLIENT_ID, auth_server.token_url, now))
    assert len(auth_server.grants) == 1 and len(auth_server.refusals) == 5


async def test_key_rotation_keeps_working(tmp_path, fhir_server, auth_server):
    path = tmp_path / smart.KEY_SECRET
    auth_server.register(CLIENT_ID, smart.add_key(path, "RS384"))
    fhir_server.put({"resourceType": "Patient", "id": "p1"})

    async def one_read() -> None:
        auth = smart.SmartAuth(auth_server.base, CLIENT_ID, smart.parse_keys(path.read_text()), "system/Patient.rs")
        client = fhir.FhirClient(auth_server.base, auth=auth)
        try:
            await collect(client.search("Patient", None))
        finally:
            await client.close()

    await one_read()
    rotated = smart.add_key(path, "ES384")
    # The new key signs at once: until the EHR has the new JWKS, it is refused by kid.
    with pytest.raises(smart.SmartError, match="kid .* is not in the client's registered JWKS"):
        await one_read()
    auth_server.register(CLIENT_ID, rotated)
    await one_read()
    assert [g.kid for g in auth_server.grants] == [k["kid"] for k in rotated["keys"]]


async def test_token_expiring_mid_run_is_renewed_exactly_once(tmp_path, fhir_server, auth_server):
    keys, jwks = new_keys(tmp_path, "RS384")
    auth_server.register(CLIENT_ID, jwks)
    for i in range(6):
        fhir_server.put({"resourceType": "Patient", "id": f"p{i}"})
    auth = smart.SmartAuth(auth_server.base, CLIENT_ID, keys, "system/Patient.rs")
    client = fhir.FhirClient(auth_server.base, auth=auth, page_size=2)
    seen = []
    try:
        async for patient in client.search("Patient", None):
            seen.append(patient["id"])
            if len(seen) == 2:
                auth_server.expire_tokens()  # revoked while the client still thinks it fresh
        assert seen == [f"p{i}" for i in range(6)]
        assert auth_server.fhir_401 == 1  # the next page's first try
        assert auth_server.token_requests == 2 and auth.token_requests == 2  # one renewal

        auth_server.reject_all = True  # a server that refuses even a new token: one retry, then the error
        with pytest.raises(fhir.FhirError, match="HTTP 401"):
            await collect(client.search("Patient", None))
        assert auth_server.token_requests == 3 and auth_server.fhir_401 == 3
    finally:
        await client.close()


async def test_discovery_errors_are_clear(tmp_path, fhir_server):
    keys, _ = new_keys(tmp_path, "RS384")
    auth = smart.SmartAuth(fhir_server.base, CLIENT_ID, keys, "system/Patient.rs")  # no SMART configuration there
    with pytest.raises(smart.SmartError, match=r"discovery at .*/fhir/\.well-known/smart-configuration: HTTP 404"):
        await auth.access_token()


def test_sync_client_is_refused(tmp_path):
    keys, _ = new_keys(tmp_path, "RS384")
    auth = smart.SmartAuth("https://ehr.example.org/fhir", CLIENT_ID, keys, "system/Patient.rs")
    with pytest.raises(RuntimeError, match="AsyncClient only"), httpx.Client(auth=auth) as http:
        http.get("https://ehr.example.org/fhir/Patient")


async def test_rest_sync_with_smart_publishes_every_type(tmp_path, fhir_server, auth_server):
    """The REST sync engine with SMART (no broker here: a recording producer; on the broker:
    test_smart_sync.py)."""
    keys, jwks = new_keys(tmp_path, "ES384")
    auth_server.register(CLIENT_ID, jwks)
    seed_harbour(fhir_server)
    producer = RecordingProducer()
    sync = make_sync(tmp_path, producer)
    auth = smart.SmartAuth(auth_server.base, CLIENT_ID, keys, "system/Patient.rs system/Appointment.rs system/Flag.rs")
    client = fhir.FhirClient(auth_server.base, auth=auth, page_size=2)
    try:
        report = await fhir.sync_rest(sync, client, None, full=False)
    finally:
        await client.close()
    published = report.published
    assert (published["patient_records"], published["appointment_records"]) == (5, 6), published
    assert published["flag_records"] > 0, published
    assert auth_server.token_requests == 1 and auth_server.fhir_401 == 0
    # Paging went through us too: the next links were rewritten to the checked base.
    assert sum("_getpages=" in r for r in fhir_server.requests) == 3
