"""Staff notifications through Slack incoming webhooks (aiohttp).

Slack's contract (tests/vendor/slack): 200 `ok` on success; 400 invalid_payload,
403 action_prohibited, 404 channel_not_found, 410 channel_is_archived are final;
500 is worth a retry; above about one message a second, 429 with `Retry-After`
(seconds). One call here is one attempt: the executor retries with the policy.

aiohttp rather than httpx: httpcore's connection pool walks every pooled connection,
polling each idle socket, on every request and every release (encode/httpx#3215). With
64 posts in flight a post cost 2.6 ms of CPU against aiohttp's 0.8 ms (BENCHMARKS.md, "Third
run at 250 ms"); Twilio sends go through aiohttp too, in the twilio library.
"""

from __future__ import annotations

import aiohttp

from ringback.sinks.retry import Permanent, Transient, parse_retry_after

# Slack's special mention: notifies the channel's active members (an urgent task must not wait).
URGENT_MENTION = "<!here> :rotating_light:"


class SlackWebhook:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s  # RINGBACK_SLACK_TIMEOUT_S
        self._client: aiohttp.ClientSession | None = None

    def _get_client(self) -> aiohttp.ClientSession:
        # An aiohttp session belongs to the loop it was made in: made at the first post.
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._client

    async def post(self, webhook_url: str, text: str, urgent: bool = False) -> None:
        """`urgent`: the message mentions @here, so the channel's members present are alerted."""
        if urgent:
            text = f"{URGENT_MENTION} {text}"
        try:
            async with self._get_client().post(webhook_url, json={"text": text}) as response:
                status = response.status
                answer = await response.text(errors="replace")
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as exc:
            raise Transient(f"cannot connect to Slack: {type(exc).__name__}") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Transient(f"Slack call broke off: {type(exc).__name__}", ambiguous=True) from None
        if 200 <= status < 300:
            return
        reason = answer[:60].strip()
        if status == 429:
            raise Transient("Slack answered 429 (rate limited)", retry_after=parse_retry_after(retry_after))
        if status >= 500:
            raise Transient(f"Slack answered {status}", ambiguous=True)
        raise Permanent(f"Slack refused the message: HTTP {status} {reason}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
