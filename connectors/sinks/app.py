"""The sink workers (`ringback sinks`): action commands in, effects out.

A separate Faust application (its own consumer group) so a slow API never stalls
classification; several sink processes share the action partitions.
"""

from __future__ import annotations

import logging
import os

import faust
from prometheus_client import Counter

from connectors.sinks.twilio_sms import SmsRejected, TwilioSms
from ringback.practice_directory import PracticeDirectory
from ringback.settings import Settings
from schemas.codec import register_faust_codecs
from streams import topics

log = logging.getLogger(__name__)

env = Settings()
register_faust_codecs()

ACTIONS_DONE = Counter("ringback_sink_actions_total", "Actions carried out, by kind and result",
                       ["kind", "result"])

app = faust.App(
    f"{env.ringback_namespace}-sinks",
    broker=f"kafka://{env.kafka_bootstrap_servers}",
    store=os.environ.get("RINGBACK_SINKS_STORE", "memory://"),
    datadir=str(env.ringback_state_dir / "sinks"),
    topic_partitions=env.ringback_partitions,
    topic_replication_factor=1,
    processing_guarantee="at_least_once",
    web_enabled=os.environ.get("RINGBACK_SINKS_WEB", "1") == "1",
    web_port=int(os.environ.get("RINGBACK_SINKS_METRICS_PORT", "9102")),
    web_bind="0.0.0.0",
    consumer_auto_offset_reset="earliest",
    key_serializer="raw",
)

directory = PracticeDirectory()
sms = TwilioSms(env) if env.twilio_account_sid else None

actions = app.topic(topics.topic_name(topics.ACTIONS, env), key_type=bytes,
                    value_serializer="avro_action_command",
                    partitions=topics.partition_count(topics.ACTIONS, env))


@app.agent(actions)
async def carry_out(stream):
    async for action in stream:
        await execute(action)


async def execute(action: dict) -> None:
    practice = directory.by_id(action["practice_id"])
    if practice is None:
        log.error("action %s for unknown practice dropped", action["action_id"])
        ACTIONS_DONE.labels(action["kind"], "unknown_practice").inc()
        return
    if action["kind"] == "SEND_SMS":
        if sms is None:
            raise RuntimeError("SMS action but TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN are not set")
        try:
            await sms.send(practice, action["recipient"], action["body"])
        except SmsRejected as exc:
            log.error("action %s rejected: %s", action["action_id"], exc)
            ACTIONS_DONE.labels(action["kind"], "rejected").inc()
            return
        ACTIONS_DONE.labels(action["kind"], "sent").inc()
    else:
        ACTIONS_DONE.labels(action["kind"], "unsupported").inc()
