"""The CDR file on disk: complete lines from an offset, and which file a position is in.

The PBX appends whole lines; a last line without its newline is still being written.
A file is known by its inode plus a digest of its first bytes, because an inode number
is reused once a file is deleted (logrotate renames `Master.csv`, the PBX opens a new one).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

MAX_READ_BYTES = 4 * 1024 * 1024
MAX_BATCH_LINES = 2000
HEAD_BYTES = 64


def read_lines(
    path: Path, offset: int, final: bool = False, max_lines: int = MAX_BATCH_LINES, max_bytes: int = MAX_READ_BYTES
) -> tuple[list[tuple[int, bytes]], int]:
    """Complete lines from `offset`: [(line start, bytes without newline)], and the offset
    after the last one. A last line without its newline is left for later, unless `final`
    (a rotated file nobody writes any more) or it alone fills `max_bytes`."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(max_bytes)
    lines: list[tuple[int, bytes]] = []
    pos = 0
    while len(lines) < max_lines:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        lines.append((offset + pos, data[pos:nl]))
        pos = nl + 1
    rest = len(data) - pos
    if rest and len(lines) < max_lines and (final or (not lines and rest >= max_bytes)):
        lines.append((offset + pos, data[pos:]))
        pos = len(data)
    return lines, offset + pos


def last_line_end(path: Path, size: int) -> int:
    """The offset after the last newline at or before `size` (where "the end" is, to start from)."""
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        block = 64 * 1024
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            end = start
    return 0


def head_digest(path: Path, length: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read(length)).hexdigest()


@dataclass(frozen=True)
class Position:
    """Where the poller is: a file by inode (plus a digest of its first bytes, because an
    inode number is reused once a file is deleted) and a byte offset in it."""

    inode: int
    offset: int
    head_len: int = 0
    head: str = hashlib.sha1(b"").hexdigest()

    @classmethod
    def of(cls, path: Path, inode: int, offset: int) -> Position:
        """Offset `offset` of the file at `path` (inode `inode`), with the digest of its first bytes."""
        head_len = min(HEAD_BYTES, offset)
        return cls(inode, offset, head_len, head_digest(path, head_len))

    def same_file(self, path: Path, st: os.stat_result) -> bool:
        if st.st_ino != self.inode or st.st_size < self.head_len:
            return False
        try:
            return head_digest(path, self.head_len) == self.head
        except OSError:
            return False
