"""SMART Backend Services authorization (HL7 SMART App Launch, "Backend Services").

The EHR registers our public keys (a JWKS) and a client id. To get an access token we
sign a short-lived JWT with our private key (RS384 or ES384, `kid` in the header; `iss` =
`sub` = client id, `aud` = token endpoint, a unique `jti`, `exp` at most 5 minutes ahead)
and post it to the token endpoint found at `[base]/.well-known/smart-configuration`
(OAuth 2.0 client_credentials, `client_assertion_type` jwt-bearer). `SmartAuth` is an
`httpx.Auth`: a FHIR client built with `auth=SmartAuth(...)` sends the cached token on
every request, renews it shortly before `expires_in`, and after a 401 renews once and
retries once. Send it only to the FHIR server (and to Bulk Data output files whose
manifest says `requiresAccessToken`), never to third-party storage.

The private keys live in one secret, `RINGBACK_EHR_SMART_KEY` (env var or secrets-dir
file): a private JWK Set as `ringback ehr keys` writes it, one JWK, or PEM private keys.
During a rotation the secret holds several; the last one (the newest) signs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from pathlib import Path

import httpx
from joserfc import jwk, jwt
from joserfc.errors import InvalidKeyTypeError, JoseError

from ringback.clock import Clock
from ringback.config.secrets import EHR_SMART_KEY, read_secret
from ringback.config.settings import Settings

KEY_SECRET = EHR_SMART_KEY  # the secret holding our private key(s)
ALGORITHMS = ("RS384", "ES384")  # what SMART Backend Services requires servers to accept
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 300  # the most the SMART spec allows
DEFAULT_EXPIRES_IN_S = 300  # when a token response omits expires_in
RENEW_MARGIN_S = 60  # renew this long before expiry (at most half the token's life)
RSA_BITS = 2048
_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


class SmartError(RuntimeError):
    """Authorization failed; the message says at which step and why (never a key or a token)."""


# ---------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    key: jwk.RSAKey | jwk.ECKey


def _alg_for(key: jwk.Key) -> str:
    if isinstance(key, jwk.RSAKey):
        return "RS384"
    if isinstance(key, jwk.ECKey) and key.curve_name == "P-384":
        return "ES384"
    raise SmartError(f"a key of type {key.key_type} cannot sign RS384 or ES384 (RSA, or EC on curve P-384)")


def _signing_key(key: jwk.Key, alg: str | None) -> SigningKey:
    if not isinstance(key, jwk.RSAKey | jwk.ECKey) or not key.is_private:
        raise SmartError("the SMART key secret holds a key that is not an RSA or EC private key")
    alg = alg or _alg_for(key)
    if alg not in ALGORITHMS:
        raise SmartError(f"key algorithm {alg} is not one of {', '.join(ALGORITHMS)}")
    if alg != _alg_for(key):
        raise SmartError(f"key algorithm {alg} does not fit a {key.key_type} key")
    return SigningKey(kid=key.kid or key.thumbprint(), alg=alg, key=key)


def _import_pem(pem: bytes) -> jwk.Key:
    try:
        return jwk.import_key(pem, "RSA")
    except InvalidKeyTypeError:
        return jwk.import_key(pem, "EC")


def parse_keys(text: str) -> list[SigningKey]:
    """Private keys, oldest first: a JWK Set, one JWK, or one or more PEM keys (the `kid`
    of a PEM key is its RFC 7638 thumbprint)."""
    data = text.strip().encode()
    try:
        if data.startswith(b"{"):
            doc = json.loads(data)
            entries = doc["keys"] if "keys" in doc else [doc]
            keys = [_signing_key(jwk.import_key(entry), entry.get("alg")) for entry in entries]
        else:
            keys = [_signing_key(_import_pem(pem), None) for pem in _PEM.findall(data)]
    except SmartError:
        raise
    except (ValueError, KeyError, TypeError, JoseError) as exc:
        kind = type(exc).__name__
        raise SmartError(f"the SMART key secret is not a JWK Set, JWK or PEM private key ({kind})") from None
    if not keys:
        raise SmartError("the SMART key secret holds no private key")
    return keys


def load_keys(env: Settings) -> list[SigningKey]:
    text = read_secret(KEY_SECRET, env)
    if not text:
        raise SmartError(f"secret {KEY_SECRET} not found (env var or secrets dir): create it with `ringback ehr keys`")
    return parse_keys(text)


def public_jwks(keys: list[SigningKey]) -> dict:
    """The JWKS to register with the EHR (public parts only)."""
    return {"keys": [{**k.key.as_dict(private=False), "kid": k.kid, "alg": k.alg, "use": "sig"} for k in keys]}


def add_key(path: Path, alg: str) -> dict:
    """Append a new key pair to the private JWK Set at `path` (created 0600) and return the
    public JWKS of every key in it, the new one last."""
    if alg not in ALGORITHMS:
        raise SmartError(f"--alg must be one of {', '.join(ALGORITHMS)}")
    existing = parse_keys(path.read_text()) if path.exists() else []
    if alg == "RS384":
        key: jwk.RSAKey | jwk.ECKey = jwk.RSAKey.generate_key(RSA_BITS, private=True)
    else:
        key = jwk.ECKey.generate_key("P-384", private=True)
    keys = [*existing, SigningKey(kid=key.thumbprint(), alg=alg, key=key)]
    private = {"keys": [{**k.key.as_dict(private=True), "kid": k.kid, "alg": k.alg, "use": "sig"} for k in keys]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    # Created 0600 from the first byte (never world-readable, even briefly), then swapped in.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(private, fh, indent=2)
    os.replace(tmp, path)
    return public_jwks(keys)


# ---------------------------------------------------------------------------------- assertion
def client_assertion(key: SigningKey, client_id: str, token_url: str, now_s: float, jti: str | None = None) -> str:
    """The signed JWT that authenticates us at the token endpoint."""
    issued = int(now_s)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": jti or uuid.uuid4().hex,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_S,
    }
    return jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "JWT"}, claims, key.key, algorithms=[key.alg])


# ---------------------------------------------------------------------------------- token endpoint
@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float  # epoch seconds
    renew_at: float  # epoch seconds: after this, get a new one

    @classmethod
    def from_response(cls, body: dict, now_s: float) -> AccessToken:
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise SmartError("token endpoint answered without an access_token")
        if str(body.get("token_type", "bearer")).lower() != "bearer":
            raise SmartError(f"token endpoint issued a {body.get('token_type')!r} token, not a bearer token")
        try:
            lifetime = float(body.get("expires_in", DEFAULT_EXPIRES_IN_S))
        except (TypeError, ValueError):
            lifetime = DEFAULT_EXPIRES_IN_S
        return cls(value, now_s + lifetime, now_s + lifetime - min(RENEW_MARGIN_S, lifetime / 2))

    def fresh(self, now_s: float) -> bool:
        return now_s < self.renew_at


async def discover_token_url(http: httpx.AsyncClient, base_url: str, alg: str) -> str:
    """The token endpoint from `[base]/.well-known/smart-configuration`."""
    url = base_url.rstrip("/") + "/.well-known/smart-configuration"
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise SmartError(f"SMART discovery at {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise SmartError(f"SMART discovery at {url}: HTTP {response.status_code}")
    try:
        config = response.json()
        token_url = config["token_endpoint"]
    except (ValueError, KeyError, TypeError):
        raise SmartError(f"SMART discovery at {url}: no token_endpoint in the answer") from None
    grants = config.get("grant_types_supported")
    if grants is not None and "client_credentials" not in grants:
        raise SmartError(f"SMART discovery at {url}: the server does not offer client_credentials")
    algs = config.get("token_endpoint_auth_signing_alg_values_supported")
    if algs is not None and alg not in algs:
        raise SmartError(f"SMART discovery at {url}: the server does not accept {alg} (it lists {', '.join(algs)})")
    return str(token_url)


async def request_token(
    http: httpx.AsyncClient, token_url: str, assertion: str, scope: str, now_s: float
) -> AccessToken:
    """Exchange a client assertion for an access token."""
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    try:
        response = await http.post(token_url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise SmartError(f"token endpoint {token_url}: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        # RFC 6749 section 5.2: `error` and `error_description` say why (e.g. invalid_client).
        said = body if isinstance(body, dict) else {}
        reason = ": ".join(str(said[k]) for k in ("error", "error_description") if said.get(k))
        raise SmartError(f"token endpoint refused: HTTP {response.status_code} {reason or '(no reason given)'}")
    if not isinstance(body, dict):
        raise SmartError("token endpoint answered something other than a JSON object")
    return AccessToken.from_response(body, now_s)


# ---------------------------------------------------------------------------------- httpx.Auth
class SmartAuth(httpx.Auth):
    """Bearer tokens from SMART Backend Services for an `httpx.AsyncClient`.

    One instance per EHR (it caches the token); it may be reused across event loops
    (`ehr sync --every`). Token requests use their own short-lived client: they are rare,
    and the FHIR client's connection pool stays the FHIR server's."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        keys: list[SigningKey],
        scope: str,
        clock: Clock | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not keys:
            raise SmartError("no signing key")
        self.base_url = base_url
        self.client_id = client_id
        self.key = keys[-1]  # the newest: a rotation appends
        self.scope = scope
        self.clock = clock or Clock()
        self.timeout = timeout
        self.token_url: str | None = None
        self.token: AccessToken | None = None
        self.token_requests = 0
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _renewal_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def access_token(self, stale: str | None = None) -> str:
        """The cached token while fresh; a new one when it is not, or when it is `stale`
        (the FHIR server refused it). Concurrent callers share one renewal."""
        async with self._renewal_lock():
            now = self.clock.now()
            if self.token is not None and self.token.fresh(now) and self.token.value != stale:
                return self.token.value
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                if self.token_url is None:
                    self.token_url = await discover_token_url(http, self.base_url, self.key.alg)
                assertion = client_assertion(self.key, self.client_id, self.token_url, now)
                self.token_requests += 1
                self.token = await request_token(http, self.token_url, assertion, self.scope, now)
            return self.token.value

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("SmartAuth works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.access_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:  # revoked or expired early: renew once, retry once
            token = await self.access_token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def smart_auth(env: Settings, base_url: str, client_id: str, scope: str, clock: Clock | None = None) -> SmartAuth:
    """A SmartAuth with the keys from the secret `RINGBACK_EHR_SMART_KEY`."""
    return SmartAuth(base_url, client_id, load_keys(env), scope, clock)
