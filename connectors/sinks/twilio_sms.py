"""Sends SMS through Twilio Programmable Messaging with the official `twilio` library.

`TWILIO_API_BASE_URL` points the library at another host (a proxy, or the Prism
mock of Twilio's OpenAPI contract in tests). Twilio's spec marks only `To` as
required; "From or MessagingServiceSid" and a Body are prose rules we enforce here.
"""

from __future__ import annotations

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from ringback.settings import Practice, Settings


class SmsRejected(ValueError):
    """The message cannot be sent as asked (no sender, no body): not worth a retry."""


class TwilioSms:
    def __init__(self, env: Settings) -> None:
        if not env.twilio_account_sid or not env.twilio_auth_token:
            raise RuntimeError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set for the SMS sink")
        self.env = env
        self._client: Client | None = None

    def _get_client(self) -> Client:
        # The async HTTP client opens an aiohttp session: create it inside the running loop.
        if self._client is None:
            client = Client(self.env.twilio_account_sid, self.env.twilio_auth_token,
                            http_client=AsyncTwilioHttpClient(timeout=10))
            if self.env.twilio_api_base_url:
                client.api.base_url = self.env.twilio_api_base_url.rstrip("/")
            self._client = client
        return self._client

    async def send(self, practice: Practice, to: str, body: str | None,
                   status_callback: str | None = None) -> str:
        """Create the message; returns Twilio's message SID."""
        if not body:
            raise SmsRejected("an SMS needs a body")
        kwargs: dict = {"to": to, "body": body}
        if practice.messaging_service_sid:
            kwargs["messaging_service_sid"] = practice.messaging_service_sid
        elif practice.sms_from:
            kwargs["from_"] = practice.sms_from
        else:
            raise SmsRejected(f"practice {practice.id} has neither sms_from nor messaging_service_sid")
        if status_callback:
            kwargs["status_callback"] = status_callback
        message = await self._get_client().messages.create_async(**kwargs)
        return message.sid

    async def close(self) -> None:
        if self._client is not None:
            await self._client.http_client.close()
