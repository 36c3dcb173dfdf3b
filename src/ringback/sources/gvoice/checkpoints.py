"""Where a Google Voice mailbox watcher has read up to, in the compacted checkpoint topic.

Per watcher and folder (`checkpoint_key`): the folder's UIDVALIDITY, the last UID whose
events the broker acknowledged, and that message's INTERNALDATE (to find the place again
when the server renumbers the folder: a new UIDVALIDITY makes old UIDs meaningless).
Written only after every record of the messages up to `last_uid` was acknowledged, so a
restart reads on from the next message: a crash between the acknowledgement and the
checkpoint reads those messages again, and their events carry the same ids (the worker
drops the repeats).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ringback.config.settings import Settings
from ringback.kafka import latest_record, topics


@dataclass(frozen=True)
class Checkpoint:
    watcher_id: str
    folder: str
    uidvalidity: int
    last_uid: int
    last_date_ms: int  # INTERNALDATE of the message `last_uid` (0: none read yet)
    updated_at: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, value: bytes) -> Checkpoint:
        data = json.loads(value)
        return cls(
            watcher_id=str(data["watcher_id"]),
            folder=str(data["folder"]),
            uidvalidity=int(data["uidvalidity"]),
            last_uid=int(data["last_uid"]),
            last_date_ms=int(data.get("last_date_ms") or 0),
            updated_at=int(data["updated_at"]),
        )


def checkpoint_key(watcher_id: str, folder: str) -> bytes:
    return f"{watcher_id}|{folder}".encode()


def load_checkpoint(env: Settings, watcher_id: str, folder: str, timeout: float = 30.0) -> Checkpoint | None:
    """The latest checkpoint of this watcher and folder: the compacted topic read to its end."""
    value = latest_record.read_latest(env, topics.GVOICE_CHECKPOINTS, checkpoint_key(watcher_id, folder), timeout)
    return Checkpoint.decode(value) if value is not None else None
