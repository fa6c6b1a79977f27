"""Tests for databazel/private/script_errors.py (running scripts: test_runner.py)."""

from pathlib import Path

import script_errors


def test_tail_of_short_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"one\ntwo\nthree\n\n\n")
    assert script_errors.tail(str(path), 2, 8192) == "two\nthree"
    path.write_bytes(b"")
    assert script_errors.tail(str(path), 20, 8192) == ""


def test_tail_reads_only_the_end(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open(path, "wb") as f:
        f.write(b"x" * 10_000_000)
        f.write(b"\n" + b"\n".join(b"line %d" % i for i in range(5)) + b"\n")
    assert script_errors.tail(str(path), 20, 64) == "\n".join(
        f"line {i}" for i in range(5)
    )
    # The line cut by the byte limit is dropped, not shown half.
    assert script_errors.tail(str(path), 20, 20) == "line 3\nline 4"


def test_tail_replaces_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"caf\xc3\xa9 \xff\n")
    assert script_errors.tail(str(path), 20, 8192) == "café \ufffd"
