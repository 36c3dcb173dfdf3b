"""Settings for building the worker's and the sinks' Faust apps in a test without a broker:
memory stores, a namespace `x`, four partitions, a bootstrap address nobody listens on."""

from __future__ import annotations

from ringback.config.settings import Settings


def settings(**values) -> Settings:
    base = {
        "ringback_namespace": "x",
        "ringback_partitions": 4,
        "ringback_store": "memory://",
        "ringback_sinks_store": None,
        "kafka_bootstrap_servers": "127.0.0.1:1",  # never contacted
        "twilio_account_sid": None,
        "twilio_auth_token": None,
        "smtp_url": None,
    }
    return Settings(_env_file=None, **{**base, **values})


def timers(app) -> set[str]:
    return {task.__name__ for task in app._app_tasks}
