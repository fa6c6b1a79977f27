"""Tests for databazel/private/outputs.py: atomic writes (output checks: test_runner.py)."""

import os
import stat
from pathlib import Path

import outputs
import pytest


def test_write_and_copy_atomic_replace_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    outputs.write_atomic(str(path), "new\r\n")
    assert path.read_bytes() == b"new\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    copy = tmp_path / "copy.bin"
    outputs.copy_atomic(str(path), str(copy))
    assert copy.read_bytes() == b"new\r\n"
    assert sorted(os.listdir(tmp_path)) == ["copy.bin", "out.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outputs.replace_atomic(str(path), half_then_fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
