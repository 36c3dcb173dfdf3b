"""The MLLP server: framing (0x0B message 0x1C 0x0D) from python-hl7's asyncio streams, one
message at a time per connection (the sender waits for each ACK before the next one).

`handle(raw)` returns the ACK to send back, or None to close the connection without an
answer (the sender keeps the message and sends it again).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import hl7
from hl7.mllp import HL7StreamReader, HL7StreamWriter, InvalidBlockError, start_hl7_server

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024  # a larger frame is answered AE and skipped

Handler = Callable[[bytes], Awaitable[bytes | None]]


def ack(msg: hl7.Message, code: str, text: str | None = None) -> bytes:
    """The original-mode ACK of `msg`: MSA-1 `code`, MSA-2 its control id, MSA-3 `text`."""
    reply = msg.create_ack(code, message_id=uuid.uuid4().hex[:20])
    if text:
        reply.segment("MSA").assign_field(msg.escape(text), 3)
    return str(reply).rstrip("\r").encode()


def bare_ack(code: str, text: str) -> bytes:
    """An ACK for what has no usable MSH (its control id unknown: MSA-2 empty)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    safe = "".join(ch for ch in text if ch not in "|^~\\&\r\n")
    return f"MSH|^~\\&|ringback||||{now}||ACK|{uuid.uuid4().hex[:20]}|P|2.5.1\rMSA|{code}||{safe}".encode()


async def serve(handle: Handler, host: str, port: int, max_bytes: int = MAX_MESSAGE_BYTES) -> asyncio.Server:
    async def on_client(reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        try:
            while True:
                try:
                    raw = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break  # the sender closed (a partial frame, if any, was never acknowledged)
                except InvalidBlockError:
                    writer.writeblock(bare_ack("AE", "MLLP frame without the start byte 0x0B"))
                    await writer.drain()
                    continue
                except ValueError:  # the frame is longer than max_bytes
                    writer.writeblock(bare_ack("AE", f"message longer than {max_bytes} bytes"))
                    await writer.drain()
                    continue
                reply = await handle(raw)
                if reply is None:
                    break
                writer.writeblock(reply)
                await writer.drain()
        except ConnectionError as exc:
            log.info("mllp connection lost: %s", exc)
        finally:
            writer.close()

    return await start_hl7_server(on_client, host, port, limit=max_bytes)
