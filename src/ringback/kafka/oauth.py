"""OAUTHBEARER for the aiokafka clients (the Faust apps): tokens from an OAuth 2 client-credentials
grant, as librdkafka's `sasl.oauthbearer.method=oidc` gets them for the confluent-kafka clients.

Authlib's client does the grant (client_secret_basic) and knows when a token expires; a token
is fetched again a minute before it does.
"""

from __future__ import annotations

from aiokafka.abc import AbstractTokenProvider
from authlib.integrations.httpx_client import AsyncOAuth2Client


class ClientCredentialsTokens(AbstractTokenProvider):
    def __init__(self, token_endpoint_url: str, client_id: str, client_secret: str, scope: str | None) -> None:
        self.url = token_endpoint_url
        self._client = AsyncOAuth2Client(client_id, client_secret, scope=scope, timeout=10.0)

    async def token(self) -> str:
        current = self._client.token
        if not current or current.is_expired(leeway=60):
            current = await self._client.fetch_token(self.url, grant_type="client_credentials")
        return str(current["access_token"])
