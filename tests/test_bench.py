"""tools/bench: its report code runs (the benchmarks themselves are not tests: no timings are asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from bazel_harness import REPO

sys.path.insert(0, str(REPO / "tools" / "bench"))
_spec = importlib.util.spec_from_file_location("bench_run", REPO / "tools/bench/run.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
import render  # noqa: E402 - tools/bench/render.py, beside run.py


def _results() -> dict:
    def analysis(n: int, t: float) -> dict:
        return {
            "trials": n,
            "load": [(0.5, 0.5, 0.5), (0.6, 0.5, 0.5)],
            "databazel": {"time": t, "runs": [t], "peak_rss_mib": 300.0 + n / 10},
            "genrules": {"time": t / 3, "runs": [t / 3], "peak_rss_mib": 200.0},
        }

    return {
        "date": "today",
        "args": " --quick",
        "reps": 1,
        "max_load": 1.5,
        "machine": bench.machine(),
        "versions": {"bazel": "bazel 4.2.3", "python": "3.11", "databazel": "abc"},
        "load_before": (0.1, 0.2, 0.3),
        "load_after": (0.1, 0.2, 0.3),
        "notes": ["A note."],
        "overhead": {
            "trials": [5, 20],
            "bazel_per_trial": [0.25],
            "bazel": 0.25,
            "direct": 0.01,
            "runner": 0.1,
            "overhead": 0.24,
            "cpu": {
                "bazel_per_trial": [0.2],
                "bazel": 0.2,
                "direct": 0.01,
                "runner": 0.05,
            },
        },
        "cold_trivial": {"trials": 20, "jobs1": 6.0, "jobs2": 4.0, "serial_loop": 0.1},
        "mnist": {
            "trials": 12,
            "actions": 26,
            "jobs1": 20.0,
            "jobs2": 12.0,
            "serial_loop": 22.0,
        },
        "scaling": [
            {
                "trials": n,
                "cold": n * 0.2 + 2,
                "actions": 2 * n + 1,
                "noop": 0.3,
                "empty_build": 0.2,
                "load": [(0.5, 0, 0), (0.6, 0, 0)],
            }
            for n in (10, 100, 1000)
        ],  # fmt: skip
        "add_grid_value": {
            "trials": 100,
            "cold": 20.0,
            "cold_actions": 201,
            "time": 3.0,
            "runs": [3.0],
            "actions": 21,
            "new_trials": 10,
        },  # fmt: skip
        "analysis": [analysis(n, 2 + n / 500) for n in (10, 100, 1000, 5000)],
        "analysis_profile": "=== PHASE SUMMARY INFORMATION ===\n\nTotal run time 1 s\n\nCritical path",
    }


def test_grids_have_the_requested_number_of_trials() -> None:
    for n in (2, 10, 20, 100, 1000, 5000):
        assert bench._trials(bench.grid_for(n)) == n


def test_the_report_lists_every_target_and_figure(tmp_path: Path) -> None:
    results = _results()
    assert render.plot(results, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes().startswith(b"\x89PNG")
    text = render.render(results, "b.png")
    for target in render.TARGETS.values():
        assert f"| {target} |" in text
    assert (
        "| per-trial overhead, trivial scripts, sandboxed <= 0.15 s | 0.240 s | no |"
        in text
    )
    assert "![benchmarks](b.png)" in text
    assert "Total run time" in text
    assert "| 5,000 |" in text
    assert "through Bazel 0.200 s" in text
    # The bench counts processes, not the actions of each mnemonic, and says so.
    assert "| after adding one value | 3.0 s | 21 |" in text
    assert "could not count them per mnemonic" in text
    assert "DatabazelTrain" not in text and "spawn" not in text


def test_processes_are_counted_from_bazels_line_never_per_mnemonic() -> None:
    stderr = (
        "INFO: Found 1 target...\nINFO: 42 processes: 17 internal, 25 linux-sandbox.\n"
    )
    assert bench.processes_run(stderr) == 25
    assert bench.processes_run("INFO: 1 process: 1 internal.\n") == 0
    assert bench.processes_run("INFO: 0 processes.\n") == 0
    assert bench.processes_run("ERROR: no such target\n") is None
    result = bench.ProcessCount(bench.Result(0, "", stderr, []), 25)
    assert result.executed() == 25
    with pytest.raises(ValueError, match="not the spawns of each mnemonic"):
        result.executed("DatabazelTrain")
    with pytest.raises(ValueError, match="not the spawns of each mnemonic"):
        result.executed_by_mnemonic()
    with pytest.raises(ValueError):
        bench.ProcessCount(bench.Result(1, "", "", []), None).executed()
