"""Content codings the gateway undoes itself (`sources/webhook.py: decoded_body`): pure, no server."""

from __future__ import annotations

import gzip
import zlib

import pytest

from ringback.sources.webhook import UnreadableBody, decoded_body

BODY = b'{"status":"busy","to":"13125550100"}' * 20
LIMIT = 64 * 1024


def raw_deflate(body: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


@pytest.mark.parametrize(
    "header, sent",
    [
        (None, BODY),
        ("identity", BODY),
        ("gzip", gzip.compress(BODY)),
        ("X-GZIP", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", raw_deflate(BODY)),
        ("deflate, gzip", gzip.compress(zlib.compress(BODY))),  # the last coding applied is undone first
        (" gzip ,identity", gzip.compress(BODY)),
    ],
)
def test_codings_are_undone(header, sent):
    assert decoded_body(sent, header, LIMIT) == BODY


@pytest.mark.parametrize(
    "header, sent, status, reason, says",
    [
        ("gzip", gzip.compress(BODY)[:-8], 400, "bad_encoding", "truncated"),
        ("gzip", gzip.compress(BODY)[:5], 400, "bad_encoding", "truncated"),
        ("gzip", b"", 400, "bad_encoding", "truncated"),
        ("gzip", gzip.compress(BODY) + b"x", 400, "bad_encoding", "after the end"),
        ("gzip", b"\x1f\x8bnot gzip at all", 400, "bad_encoding", "does not decompress"),
        ("deflate", zlib.compress(BODY)[:-3], 400, "bad_encoding", "truncated"),
        ("deflate", b"\x78\x9cxxxxxxxx", 400, "bad_encoding", "does not decompress"),
        ("gzip", gzip.compress(b"0" * (LIMIT + 1)), 413, "too_large", "once decompressed"),
        ("br", BODY, 415, "content_encoding", "'br' is not supported"),
        ("gzip, zstd", BODY, 415, "content_encoding", "'zstd'"),
    ],
)
def test_what_cannot_be_undone_is_refused_with_a_reason(header, sent, status, reason, says):
    with pytest.raises(UnreadableBody) as refused:
        decoded_body(sent, header, LIMIT)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert says in refused.value.message


def test_a_body_exactly_at_the_limit_is_read():
    assert decoded_body(gzip.compress(b"0" * LIMIT), "gzip", LIMIT) == b"0" * LIMIT
