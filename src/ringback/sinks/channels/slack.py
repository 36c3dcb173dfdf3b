"""Staff notifications through Slack incoming webhooks (httpx).

Slack's contract (tests/vendor/slack): 200 `ok` on success; 400 invalid_payload,
403 action_prohibited, 404 channel_not_found, 410 channel_is_archived are final;
500 is worth a retry; above about one message a second, 429 with `Retry-After`
(seconds). One call here is one attempt: the executor retries with the policy.
"""

from __future__ import annotations

import httpx

from ringback.sinks.retry import Permanent, Transient, parse_retry_after

# Slack's special mention: notifies the channel's active members (an urgent task must not wait).
URGENT_MENTION = "<!here> :rotating_light:"


class SlackWebhook:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s  # RINGBACK_SLACK_TIMEOUT_S
        self._client: httpx.AsyncClient | None = None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        return self._client

    async def post(self, webhook_url: str, text: str, urgent: bool = False) -> None:
        """`urgent`: the message mentions @here, so the channel's members present are alerted."""
        if urgent:
            text = f"{URGENT_MENTION} {text}"
        try:
            response = await self._get_client().post(webhook_url, json={"text": text})
        except httpx.ConnectError as exc:
            raise Transient(f"cannot connect to Slack: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise Transient(f"Slack call broke off: {type(exc).__name__}", ambiguous=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = response.text[:60].strip()
        if status == 429:
            raise Transient(
                "Slack answered 429 (rate limited)", retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        if status >= 500:
            raise Transient(f"Slack answered {status}", ambiguous=True)
        raise Permanent(f"Slack refused the message: HTTP {status} {reason}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
