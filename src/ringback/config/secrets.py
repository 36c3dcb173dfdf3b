"""Secrets: per-practice and account-wide values named in the practices file, read from
the environment or a file in the secrets directory (never from the repository).

A secret is read by a name only known at run time (the practices file names them), so
this is, by design, the one read of the environment besides `Settings`.
"""

from __future__ import annotations

import os

from ringback.config.settings import Settings


def read_secret(name: str, env: Settings) -> str | None:
    """A secret by name: the environment variable first, then the file in the secrets dir."""
    value = os.environ.get(name)
    if value:
        return value
    path = env.ringback_secrets_dir / name
    if path.is_file():
        return path.read_text().strip()
    return None


# Secrets every deployment may set, read by these fixed names.
CONSOLE_SECRET = "RINGBACK_CONSOLE_SECRET"  # signs the console's session cookies
LOG_HASH_KEY = "RINGBACK_LOG_HASH_KEY"  # keys the phone-number hashes in logs
EHR_SMART_KEY = "RINGBACK_EHR_SMART_KEY"  # private key(s) signing SMART Backend Services assertions
# The Kafka clients' credentials (kafka/connection.py), as KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_MECHANISM ask.
KAFKA_SASL_USERNAME = "KAFKA_SASL_USERNAME"
KAFKA_SASL_PASSWORD = "KAFKA_SASL_PASSWORD"
KAFKA_SSL_KEY_PASSWORD = "KAFKA_SSL_KEY_PASSWORD"
KAFKA_OAUTHBEARER_CLIENT_SECRET = "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"
KAFKA_SECRETS = (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_KEY_PASSWORD, KAFKA_OAUTHBEARER_CLIENT_SECRET)

# Webhook secrets of the phone providers: the key a practice's `secrets` map uses, and the
# name of the account-wide secret (env var or secrets-dir file) used for practices whose map
# has no such key (one Dialpad company or Vonage account serving several practices).
PROVIDER_SECRETS: dict[str, tuple[str, str]] = {
    "twilio": ("twilio_auth_token", "TWILIO_AUTH_TOKEN"),
    "ringcentral": ("ringcentral_verification_token", "RINGCENTRAL_VERIFICATION_TOKEN"),
    "dialpad": ("dialpad_webhook_secret", "DIALPAD_WEBHOOK_SECRET"),
    "vonage": ("vonage_signature_secret", "VONAGE_SIGNATURE_SECRET"),
}
