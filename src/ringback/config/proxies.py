"""The reverse proxy in front of the gateway and the console (TLS ends there).

With `RINGBACK_TRUSTED_PROXIES` set (the addresses or networks of that one proxy hop:
the load balancer, the ingress), a request's scheme, host and client address come from
its `X-Forwarded-Proto`, `-Host` and `-For` headers, through aiohttp-remotes'
`XForwardedStrict`: a request that did not come from a trusted proxy, or whose headers
name more hops than one, is answered 400, so nobody can claim https or another client
address by sending the headers themselves. Unset: the headers are ignored. The health and
metrics paths are served directly (the kubelet, Prometheus).
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

DIRECT_PATHS = ("/healthz", "/readyz", "/metrics")


def parse_trusted(value: str | None) -> list[str]:
    """The comma-separated addresses/networks of RINGBACK_TRUSTED_PROXIES; ValueError names a bad one."""
    items = [item.strip() for item in (value or "").split(",") if item.strip()]
    for item in items:
        try:
            ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"RINGBACK_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return items


def proxy_middlewares(trusted: list[str]) -> list[Any]:
    """The aiohttp middlewares that take the scheme and client from a trusted proxy's headers."""
    if not trusted:
        return []
    from aiohttp_remotes import XForwardedStrict

    return [XForwardedStrict([trusted], white_paths=DIRECT_PATHS).middleware]
