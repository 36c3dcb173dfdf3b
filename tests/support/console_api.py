"""Checks a staff-console answer against src/ringback/console/openapi.yaml (openapi-core)."""

from __future__ import annotations

from functools import lru_cache

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from tests.conftest import REPO

SPEC_PATH = REPO / "src" / "ringback" / "console" / "openapi.yaml"
SERVER = "http://127.0.0.1:8081"  # the `servers` entry of the description


@lru_cache(maxsize=1)
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def check_openapi(
    method: str,
    path: str,
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    query: dict | None = None,
    request_body: bytes | None = None,
) -> None:
    """Raise (naming the mismatch) unless the answer is one the description allows."""
    request = MockRequest(
        SERVER, method, path.split("?")[0], args=query, data=request_body, content_type="application/json"
    )
    spec().validate_response(request, MockResponse(body, status_code=status, content_type=content_type))


def check_httpx(response) -> None:
    """The same for an httpx response (integration tests against the running console)."""
    request = response.request
    check_openapi(
        request.method,
        request.url.path,
        response.status_code,
        b"" if response.status_code == 204 else response.content,
        content_type=response.headers.get("content-type", "application/json").split(";")[0],
        query=dict(request.url.params) or None,
        request_body=request.content or None,
    )
