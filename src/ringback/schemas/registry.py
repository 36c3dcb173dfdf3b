"""The Confluent wire format through confluent-kafka's Schema Registry serializers.

``00`` + 4-byte big-endian schema id + Avro binary body. confluent-kafka's
``AvroSerializer`` registers the writer schema under the subject ``<topic>-value``
(TopicNameStrategy) and caches the id; its ``AvroDeserializer`` fetches a writer
schema by id (cached by the client) and resolves it to the reader schema.
A ``mock://`` URL gives confluent-kafka's in-memory registry (tests, local runs).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

__all__ = ["ConfluentFraming", "client_for"]


def client_for(url: str) -> SchemaRegistryClient:
    """A registry client for ``url`` (``mock://...``: confluent-kafka's in-memory one)."""
    return SchemaRegistryClient.new_client({"url": url})


class ConfluentFraming:
    """One serializer and one deserializer per schema, built on first use."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client = client
        self._serializers: dict[str, AvroSerializer] = {}
        self._deserializers: dict[str, AvroDeserializer] = {}

    def encode(self, schema_str: str, record: Any, subject_topic: str) -> bytes:
        """Register ``schema_str`` under ``<subject_topic>-value`` (once) and write ``record``."""
        serializer = self._serializers.get(schema_str)
        if serializer is None:
            serializer = self._serializers.setdefault(
                schema_str,
                AvroSerializer(
                    self.client,
                    Schema(schema_str, "AVRO"),
                    # <topic>-value, as always; the library's default (ASSOCIATED) first asks the registry.
                    conf={"subject.name.strategy": topic_subject_name_strategy},
                ),
            )
        data = serializer(record, SerializationContext(subject_topic, MessageField.VALUE))
        assert data is not None  # only a None record gives None
        return data

    def writer_schema(self, schema_id: int) -> Schema:
        """The schema registered as ``schema_id`` (the registry's 404 error if there is none)."""
        return self.client.get_schema(schema_id)

    def decode(self, reader_schema_str: str, data: bytes) -> dict[str, Any]:
        """A Confluent-framed record, resolved from its writer schema to ``reader_schema_str``."""
        deserializer = self._deserializers.get(reader_schema_str)
        if deserializer is None:
            deserializer = self._deserializers.setdefault(
                reader_schema_str, AvroDeserializer(self.client, Schema(reader_schema_str, "AVRO"))
            )
        record = deserializer(data)
        assert isinstance(record, dict)  # no from_dict hook: records come back as dicts
        return record
