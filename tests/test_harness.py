"""tests/bazel_harness.py: what it counts is what Bazel ran (no Bazel here: logs are written by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bazel_harness import Result, processes_run, wire


def spawn(mnemonic: str, *, exit_code: int = 0, cache_hit: bool = False) -> bytes:
    """One length-delimited SpawnExec message with the fields the harness reads."""

    def string(field: int, value: str) -> bytes:
        raw = value.encode()
        return wire.varint(field << 3 | 2) + wire.varint(len(raw)) + raw

    def integer(field: int, value: int) -> bytes:
        return wire.varint(field << 3) + wire.varint(value)

    message = string(10, mnemonic) + string(12, "linux-sandbox")
    if cache_hit:
        message += integer(13, 1)
    if exit_code:
        message += string(14, "NON_ZERO_EXIT") + integer(15, exit_code)
    return wire.varint(len(message)) + message


def test_processes_are_read_from_bazels_info_line() -> None:
    assert processes_run("INFO: 42 processes: 17 internal, 25 linux-sandbox.\n") == 25
    assert processes_run("INFO: 19 processes: 4 remote cache hit, 15 internal.\n") == 4
    assert processes_run("INFO: 9 processes: 5 internal, 4 worker.\n") == 4
    assert processes_run("INFO: 1 process: 1 internal.\n") == 0
    assert processes_run("INFO: 0 processes.\n") == 0
    assert processes_run("ERROR: no such target\n") is None
    # Only Bazel's own line counts, not a script's output that quotes one.
    assert processes_run("    training: INFO: 3 processes\n") is None


def test_a_build_without_an_execution_log_fails_every_count(tmp_path: Path) -> None:
    missing = tmp_path / "exec_1.binpb"
    ran = Result(0, "", "INFO: 12 processes: 7 internal, 5 linux-sandbox.\n", missing)
    with pytest.raises(AssertionError, match="wrote no execution log"):
        ran.executed()
    # Even "nothing ran" may not be concluded from a missing log ...
    noop = Result(0, "", "INFO: 1 process: 1 internal.\n", missing)
    with pytest.raises(AssertionError, match="wrote no execution log"):
        noop.executed("DatabazelTrain")
    with pytest.raises(AssertionError, match="wrote no execution log"):
        Result(1, "", "ERROR: analysis failed\n", missing).executed()
    # ... but from Bazel's own count when the build failed before running anything.
    assert Result(1, "", "ERROR: x\nINFO: 0 processes.\n", missing).executed() == 0
    with pytest.raises(AssertionError, match="wrote no execution log"):
        Result(0, "", "", None).executed()


def test_the_log_must_agree_with_bazels_count(tmp_path: Path) -> None:
    log = tmp_path / "exec_1.binpb"
    log.write_bytes(
        spawn("DatabazelTrain")
        + spawn("DatabazelTrain", exit_code=1)  # failed: Bazel does not count it
        + spawn("DatabazelEvaluate", cache_hit=True)
    )
    result = Result(
        1,
        "",
        "INFO: 6 processes: 4 internal, 1 linux-sandbox, 1 remote cache hit.\n",
        log,
    )
    assert result.executed("DatabazelTrain") == 2
    assert result.executed() == 2
    assert result.executed_by_mnemonic() == {"DatabazelTrain": 2}
    assert len(result.spawns) == 3

    short = Result(0, "", "INFO: 7 processes: 4 internal, 3 linux-sandbox.\n", log)
    with pytest.raises(
        AssertionError, match="2 spawns that succeeded, Bazel counted 3"
    ):
        short.executed()
    with pytest.raises(AssertionError, match="no `INFO: N processes` line"):
        Result(0, "", "", log).executed()
    # A test that ran and failed counts, as Bazel counts it.
    tests = tmp_path / "exec_3.binpb"
    tests.write_bytes(spawn("DatabazelTrain") + spawn("TestRunner", exit_code=1))
    failed_test = Result(
        3, "", "INFO: 4 processes: 2 internal, 2 linux-sandbox.\n", tests
    )
    assert failed_test.executed() == 2
    empty = tmp_path / "exec_2.binpb"
    empty.write_bytes(b"")
    assert Result(0, "", "INFO: 1 process: 1 internal.\n", empty).executed() == 0
