"""A secured broker for the tests: SASL_SSL with SCRAM, a CA and broker certificate made by the
session (`ringback.dev.certificates`), KRaft's StandardAuthorizer on, `admin` the super user.

A test module uses it in place of the plaintext session broker by overriding two fixtures:

    from tests.support.secure_kafka import secure_kafka_fixture  # noqa: F401 - the fixture secure_kafka

    @pytest.fixture(scope="session")
    def kafka_bootstrap(secure_kafka):
        return secure_kafka.client_config()          # kafka_tools readers connect as admin

    @pytest.fixture
    def service_env(service_env, secure_kafka):
        return with_credentials(service_env, secure_kafka)   # processes connect as admin

`secure_kafka.add_scram_user(name, password)` makes more principals (ACL tests give them
their permissions; without any they may do nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ringback.dev.local_kafka import ADMIN_USER, LocalKafka
from tests.conftest import free_port

SECRET_NAMES = ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")


@pytest.fixture(scope="session", name="secure_kafka")
def secure_kafka_fixture(tmp_path_factory) -> LocalKafka:
    broker = LocalKafka(port=free_port(), home=tmp_path_factory.mktemp("secure-kafka"), heap="512m", secure=True)
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop()


def with_credentials(
    service_env: dict[str, str], broker: LocalKafka, user: str = ADMIN_USER, password: str | None = None
) -> dict[str, str]:
    """`service_env` connecting to `broker` as `user`: the security settings in the environment,
    the username and password as files in the process's RINGBACK_SECRETS_DIR (as in a deployment)."""
    settings = broker.client_env(user, password)
    secrets_dir = Path(service_env["RINGBACK_SECRETS_DIR"])
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for name in SECRET_NAMES:
        (secrets_dir / name).write_text(settings.pop(name))
    return {**service_env, **settings}
