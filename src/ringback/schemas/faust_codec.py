"""Faust codec adapter (kept apart so that importing schemas.codec does not import faust).

Use ``schemas.codec.AvroFaustCodec`` / ``schemas.codec.register_faust_codecs``.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs as faust_codecs
from faust.types.codecs import CodecT

from ringback.schemas import codec as _codec


class AvroFaustCodec(faust_codecs.Codec):
    """Faust codec for one schema: ``_dumps`` = ``schemas.codec.encode``,
    ``_loads`` = ``schemas.codec.decode``.

    ``topic`` (optional) only names the Schema Registry subject (``<topic>-value``);
    by default the subject is ``<name>-value``. Codec chaining/cloning
    (``codec | other``) keeps ``name``/``topic`` because faust re-creates the codec
    with ``type(self)(children=..., **self.kwargs)``.
    """

    def __init__(
        self,
        name: str,
        topic: str | None = None,
        *,
        children: tuple[CodecT, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        _codec.default_codec()._get(name)  # fail fast on an unknown schema name
        if topic is not None:
            kwargs["topic"] = topic
        super().__init__(children=children, name=name, **kwargs)
        self.schema_name = name
        self.topic = topic

    def _dumps(self, obj: Any) -> bytes:
        return _codec.encode(self.schema_name, obj, topic=self.topic)

    def _loads(self, s: bytes) -> Any:
        return _codec.decode(self.schema_name, s)
