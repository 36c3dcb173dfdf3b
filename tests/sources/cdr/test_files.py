"""The CDR file on disk: complete lines from an offset (a truncated last line waits), where
"the end" is, and a file known by inode and the digest of its first bytes."""

from __future__ import annotations

from ringback.sources.cdr import files
from tests.sources.cdr.master_csv import line


def test_read_lines_waits_for_a_truncated_last_line(tmp_path):
    path = tmp_path / "Master.csv"
    a, b = line(uniqueid="1.1"), line(uniqueid="1.2")
    path.write_bytes(a + b"\n" + b[:40])
    lines, end = files.read_lines(path, 0)
    assert lines == [(0, a)] and end == len(a) + 1
    assert files.read_lines(path, end) == ([], end)  # the half line is not parsed
    with open(path, "ab") as fh:
        fh.write(b[40:] + b"\n")
    assert files.read_lines(path, end) == ([(end, b)], end + len(b) + 1)
    # A rotated file nobody writes any more: its unterminated last line is taken as final.
    path.write_bytes(a + b"\n" + b)
    assert files.read_lines(path, len(a) + 1, final=True) == ([(len(a) + 1, b)], len(a) + 1 + len(b))


def test_read_lines_respects_the_batch_limit(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(b"".join(line(uniqueid=f"1.{i}") + b"\n" for i in range(10)))
    lines, end = files.read_lines(path, 0, max_lines=4)
    assert len(lines) == 4 and end == sum(len(raw) + 1 for _, raw in lines)


def test_last_line_end(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(b"one\ntwo\nthr")
    assert files.last_line_end(path, path.stat().st_size) == 8
    path.write_bytes(b"partial")
    assert files.last_line_end(path, path.stat().st_size) == 0
    assert files.last_line_end(path, 0) == 0


def test_a_replaced_file_with_a_reused_inode_is_not_mistaken_for_the_old_one(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(line(uniqueid="1") + b"\n")
    st = path.stat()
    head_len = min(files.HEAD_BYTES, st.st_size)
    pos = files.Position(st.st_ino, st.st_size, head_len, files.head_digest(path, head_len))
    assert pos.same_file(path, st)
    with open(path, "r+b") as fh:  # same inode, other content: what inode reuse looks like
        fh.write(line(uniqueid="9", src="6505550000"))
    assert not pos.same_file(path, path.stat())
