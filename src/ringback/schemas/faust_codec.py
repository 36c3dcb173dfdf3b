"""Faust codecs over ``schemas.codec``: ``value_serializer="avro_<name>"``.

Kept apart from ``schemas.codec`` so that processes without faust never import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.serializers import codecs as faust_codecs
from faust.types.codecs import CodecT

from ringback.schemas import codec

__all__ = ["AvroFaustCodec", "register_faust_codecs"]


class AvroFaustCodec(faust_codecs.Codec):
    """Faust codec for one schema: ``_dumps`` is ``codec.encode``, ``_loads`` is ``codec.decode``.

    ``topic`` (optional) only names the Schema Registry subject (``<topic>-value``);
    by default the subject is ``<name>-value``. Chaining (``codec | other``) keeps
    ``name`` and ``topic``: faust re-creates the codec as
    ``type(self)(children=..., **self.kwargs)``.
    """

    def __init__(
        self,
        name: str,
        topic: str | None = None,
        *,
        children: tuple[CodecT, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        codec.schema(name)  # fail fast on an unknown schema name
        if topic is not None:
            kwargs["topic"] = topic
        super().__init__(children=children, name=name, **kwargs)
        self.schema_name = name
        self.topic = topic

    def _dumps(self, obj: Any) -> bytes:
        return codec.encode(self.schema_name, obj, topic=self.topic)

    def _loads(self, s: bytes) -> Any:
        return codec.decode(self.schema_name, s)


def register_faust_codecs(names: Iterable[str] | None = None) -> dict[str, AvroFaustCodec]:
    """Register an ``avro_<name>`` faust codec per schema (all by default); returns them."""
    registered = {}
    for name in names if names is not None else codec.SCHEMA_NAMES:
        registered[f"avro_{name}"] = AvroFaustCodec(name)
        faust_codecs.register(f"avro_{name}", registered[f"avro_{name}"])
    return registered
