"""The stream topology, declared in one place: topics, tables, agents.

A call event flows: call-events topic → `process_call_events` (classify with the
rules) → actions topic, which the sink workers carry out.
"""

from __future__ import annotations

from streams import topics
from streams.app import app, clock, directory, env
from streams.agents import workflow

call_events = app.topic(topics.topic_name(topics.CALL_EVENTS, env), key_type=bytes,
                        value_serializer="avro_call_event",
                        partitions=topics.partition_count(topics.CALL_EVENTS, env))
actions = app.topic(topics.topic_name(topics.ACTIONS, env), key_type=bytes,
                    value_serializer="avro_action_command",
                    partitions=topics.partition_count(topics.ACTIONS, env))


@app.agent(call_events)
async def process_call_events(stream):
    async for key, event in stream.items():
        for action in workflow.on_call_event(event, directory, clock.now_ms()):
            await actions.send(key=key, value=action)
