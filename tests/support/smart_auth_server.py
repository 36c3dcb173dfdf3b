"""A SMART Backend Services authorization server for the tests, in front of a FHIR server.

An aiohttp app on a free port, in its own thread:

* `GET  /fhir/.well-known/smart-configuration`: the discovery document (token endpoint,
  client_credentials, private_key_jwt, RS384 / ES384);
* `POST /token`: verifies the client assertion with PyJWT (an implementation independent
  of the joserfc that signs it) against the JWKS registered for the client: `kid` known,
  `alg` RS384 or ES384, signature, `iss` = `sub` = client id, `aud` = this token URL,
  `exp` in the future and at most 5 minutes ahead, `jti` never seen before. A refusal is
  RFC 6749's `invalid_client` with an `error_description` naming the cause. A grant is an
  opaque token with a short `expires_in`;
* `/fhir/...`: the FHIR-side check. A request without a live token gets 401; a good one is
  forwarded to the upstream FHIR server (the tests' FhirTestServer, or HAPI FHIR) with the
  upstream's base URL in the answer rewritten to ours, so next links come back here too.

`expire_tokens()` ends every issued token early (the next FHIR request gets 401), as an
EHR does when it revokes one; `expire_after(n)` does so once n more FHIR requests have
been served (mid-run, at a known point); `grants`, `refusals`, `fhir_401` and `served`
(the FHIR requests let through) say what happened.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field

import aiohttp
import jwt
from aiohttp import web

ALGORITHMS = ["RS384", "ES384"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 300
LEEWAY_S = 10  # clock skew allowed between client and server
HOP_BY_HOP = {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive", "host"}


@dataclass
class Grant:
    client_id: str
    kid: str
    scope: str
    expires_at: float


@dataclass
class SmartAuthServer:
    upstream: str  # the FHIR base the checked requests go to
    expires_in: int = 60
    clients: dict[str, jwt.PyJWKSet] = field(default_factory=dict)
    tokens: dict[str, Grant] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    used_jti: set[str] = field(default_factory=set)
    fhir_401: int = 0
    served: list[str] = field(default_factory=list)  # path and query of each FHIR request let through
    reject_all: bool = False  # the FHIR side refuses every token (a client that may not read)
    expire_countdown: int | None = None  # expire_after(n): FHIR requests still served before the expiry

    def __post_init__(self) -> None:
        self.upstream = self.upstream.rstrip("/")
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the SMART test server did not start")

    # -- what the test does
    def register(self, client_id: str, jwks: dict) -> None:
        """Register (or replace: a rotation) a client's public JWKS."""
        with self._lock:
            self.clients[client_id] = jwt.PyJWKSet.from_dict(jwks)

    def expire_tokens(self) -> None:
        with self._lock:
            self._expire_all()

    def expire_after(self, requests: int) -> None:
        """Expire every token issued so far once `requests` more FHIR requests were served."""
        with self._lock:
            self.expire_countdown = requests

    def _expire_all(self) -> None:  # with the lock held
        for grant in self.tokens.values():
            grant.expires_at = 0

    @property
    def token_requests(self) -> int:
        return len(self.grants) + len(self.refusals)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- the app
    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._session.close())
            self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/fhir/.well-known/smart-configuration", self._discovery)
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/fhir/{tail:.*}", self._fhir)
        app.router.add_route("*", "/fhir", self._fhir)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)  # the OS picks a free port
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://127.0.0.1:{port}"
        self.base = f"{self.origin}/fhir"
        self.token_url = f"{self.origin}/token"
        self._session = aiohttp.ClientSession()

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "token_endpoint": self.token_url,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
                "scopes_supported": ["system/*.rs", "system/*.read"],
                "capabilities": ["client-confidential-asymmetric"],
            }
        )

    def _refuse(self, cause: str) -> web.Response:
        with self._lock:
            self.refusals.append(cause)
        return web.json_response({"error": "invalid_client", "error_description": cause}, status=400)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return self._refuse("client_assertion_type is not jwt-bearer")
        assertion = str(form.get("client_assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return self._refuse("client_assertion is not a JWT")
        if header.get("alg") not in ALGORITHMS:
            return self._refuse(f"alg {header.get('alg')} is not RS384 or ES384")
        client_id = unverified.get("iss")
        with self._lock:
            keyset = self.clients.get(str(client_id))
        if keyset is None:
            return self._refuse(f"iss {client_id!r} is not a registered client")
        kid = header.get("kid")
        key = next((k for k in keyset.keys if k.key_id == kid), None)
        if key is None:
            return self._refuse(f"kid {kid!r} is not in the client's registered JWKS")
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[header["alg"]],
                audience=self.token_url,
                issuer=client_id,
                leeway=LEEWAY_S,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            return self._refuse("the assertion has expired (exp)")
        except jwt.InvalidAudienceError:
            return self._refuse(f"aud is not the token endpoint {self.token_url}")
        except jwt.InvalidSignatureError:
            return self._refuse("signature does not verify with the registered key")
        except jwt.InvalidTokenError as exc:
            return self._refuse(f"invalid assertion: {exc}")
        if claims["sub"] != client_id:
            return self._refuse("sub is not the client id")
        if claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME_S + LEEWAY_S:
            return self._refuse("exp is more than 5 minutes ahead")
        with self._lock:
            if claims["jti"] in self.used_jti:
                self.refusals.append("jti replayed")
                return web.json_response(
                    {"error": "invalid_client", "error_description": f"jti {claims['jti']} was already used (replay)"},
                    status=400,
                )
            self.used_jti.add(claims["jti"])
            token = secrets.token_urlsafe(24)
            scope = str(form.get("scope", ""))
            grant = Grant(client_id, kid, scope, time.time() + self.expires_in)
            self.tokens[token] = grant
            self.grants.append(grant)
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": self.expires_in, "scope": scope}
        )

    def _live(self, authorization: str | None) -> bool:
        if self.reject_all or not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            grant = self.tokens.get(authorization.removeprefix("Bearer "))
            return grant is not None and grant.expires_at > time.time()

    async def _fhir(self, request: web.Request) -> web.StreamResponse:
        if not self._live(request.headers.get("Authorization")):
            with self._lock:
                self.fhir_401 += 1
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "login", "diagnostics": "no live access token"}],
            }
            return web.json_response(outcome, status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        with self._lock:
            self.served.append(request.path_qs)
        url = self.upstream + request.path_qs.removeprefix("/fhir")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"authorization"}}
        async with self._session.request(
            request.method, url, headers=headers, data=await request.read(), allow_redirects=False
        ) as upstream:
            body = (await upstream.read()).replace(self.upstream.encode(), self.base.encode())
            out = {
                k: v.replace(self.upstream, self.base)
                for k, v in upstream.headers.items()
                if k.lower() not in HOP_BY_HOP
            }
        with self._lock:
            if self.expire_countdown is not None:
                self.expire_countdown -= 1
                if self.expire_countdown <= 0:
                    self.expire_countdown = None
                    self._expire_all()
        return web.Response(status=upstream.status, body=body, headers=out)
