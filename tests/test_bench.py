"""tools/bench: its report code runs (the benchmarks themselves are not tests: no timings are asserted)."""

from __future__ import annotations

import ast
import importlib.util
import json
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
        "torch": {
            "actions": 26,
            "install": 60.0,
            "env_mib": 900.0,
            "env_files": 21000,
            "sandboxed": 50.0,
            "warm": 30.0,
            "warm_processes": "39 processes: 12 internal, 3 linux-sandbox, 24 worker.",
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
        "analysis": [analysis(n, 2 + n / 500) for n in (1000, 10000, 50000)],
        "profile": {
            "trials": 24,
            "wall": 9.5,
            "processes": "51 processes: 3 internal, 48 worker.",
            **{
                kind: {
                    "bazel": 0.02,
                    "worker": 0.3,
                    "runner_before": 0.005,
                    "fork_isolate": 0.004,
                    "script": 0.28,
                    "exit": 0.003,
                    "runner_after": 0.008,
                    "learn": 0.01,
                    "n": 24,
                    "matched": 24,
                }
                for kind in ("train", "evaluate")
            },
        },
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
        "| per-trial overhead, trivial scripts, default mode (warm) <= 0.03 s | 0.240 s | no |"
        in text
    )
    # 50,000 trials: (102 - 22) / 40,000 s a trial against a third of it.
    assert "| 2.00 ms vs 0.67 ms a trial (10,000 -> 50,000) = 3.0x | no |" in text
    assert "| loading + analysis of 50,000 trials <= 60 s | 102.0 s | no |" in text
    # Where a trial's time goes in a warm worker, each phase and the whole action.
    assert "| the script itself | 0.280 | 0.280 |" in text
    assert "| **the action, as Bazel saw it** | **0.320** | **0.320** |" in text
    assert "![benchmarks](b.png)" in text
    assert "Total run time" in text
    assert "| 50,000 |" in text
    assert (
        "| warm (the default; 39 processes: 12 internal, 3 linux-sandbox, 24 worker.) | 30.0 s |"
        in text
    )
    assert "through Bazel 0.200 s" in text
    # The bench counts processes, not the actions of each mnemonic, and says so.
    assert "| after adding one value | 3.0 s | 21 |" in text
    assert "could not count them per mnemonic" in text
    assert "DatabazelTrain" not in text and "spawn" not in text


def test_a_worker_log_line_is_read_phase_by_phase() -> None:
    import warm_profile

    line = (
        "databazel worker: //mnist24:s__C-1 train 0.4123 s: runner 0.0021, "
        "fork+isolate 0.0040, script 0.3800, exit 0.0020, runner 0.0050; learn 0.0100\n"
    )
    assert warm_profile.parse_worker_line(line) == {
        "target": "//mnist24:s__C-1",
        "kind": "train",
        "worker": 0.4123,
        "learn": 0.01,
        "runner_before": 0.0021,
        "fork_isolate": 0.004,
        "script": 0.38,
        "exit": 0.002,
        "runner_after": 0.005,
    }
    assert warm_profile.parse_worker_line("something else\n") is None


def test_processes_are_counted_from_bazels_line_never_per_mnemonic() -> None:
    stderr = (
        "INFO: Found 1 target...\nINFO: 42 processes: 17 internal, 25 linux-sandbox.\n"
    )
    assert bench.processes_run(stderr) == 25
    assert bench.processes_run("INFO: 1 process: 1 internal.\n") == 0
    assert bench.processes_run("INFO: 0 processes.\n") == 0
    assert bench.processes_run("ERROR: no such target\n") is None
    result = bench.ProcessCount(bench.Result(0, "", stderr), 25)
    assert result.executed() == 25
    with pytest.raises(ValueError, match="not the spawns of each mnemonic"):
        result.executed("DatabazelTrain")
    with pytest.raises(ValueError, match="not the spawns of each mnemonic"):
        result.executed_by_mnemonic()
    with pytest.raises(ValueError):
        bench.ProcessCount(bench.Result(1, "", ""), None).executed()


def test_the_remote_part_reads_worker_logs_and_renders_side_by_side(
    tmp_path: Path,
) -> None:
    import remote

    # Two actions as tests/remote/worker.py logs them: one fetched its inputs, one linked them.
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/worker-1.log").write_text(
        "worker worker-1: connected to 127.0.0.1:1 as s\n"
        "worker worker-1: input root: 2915 files, 2910 fetched (141.3 MB), 300 directories fetched, in 9.50s\n"
        "worker worker-1: ran action for a.model exit=0 in 2.5s platform={}\n"
        "worker worker-1: outputs uploaded in 0.05s\n"
        "worker worker-1: input root: 2916 files, 2 fetched (0.0 MB), 1 directories fetched, in 0.40s\n"
        "worker worker-1: ran action for b.model exit=0 in 2.1s platform={}\n"
        "worker worker-1: outputs uploaded in 0.04s\n"
    )
    actions = remote.worker_actions(tmp_path)
    assert [(a["fetched"], a["inputs"], a["run"]) for a in actions] == [
        (2910, 9.5, 2.5),
        (2, 0.4, 2.1),
    ]
    build = {"time": 50.0, "processes": "27 remote"}
    results = {
        "remote": {
            "local": [build],
            "cold": [{**build, "ok": True, "actions": actions[:1], "writes": 9000, "blobs": 3000, "refused": 0}],
            "seen": [{**build, "actions": actions[1:]}],
            "served": [build],
            **{f"{k}_time": t for k, t in (("local", 40.0), ("cold", 90.0), ("seen", 45.0), ("served", 5.0))},
        }
    }  # fmt: skip
    text = "\n".join(remote.render(results))
    assert "| local, `--jobs=2` | 40.0 s |" in text
    assert "| remote, cold: empty grid" in text and "| 90.0 s |" in text
    assert "| 9.50 s | 2.5 s | 0.05 s |" in text and "| 0.40 s | 2.1 s |" in text
    assert "9,000 ByteStream writes for 3,000 distinct blobs (3.0 each" in text
    rows = dict((t, (m, met)) for t, m, met in remote.verdicts(results))
    assert rows[remote.TARGETS["first_try"]] == ("1 of 1 cold builds", "yes")
    assert rows[remote.TARGETS["seen"]] == ("0.40 s vs 9.50 s = 0.04x", "yes")


def test_the_halving_part_compares_with_the_full_grid_over_the_same_trials() -> None:
    import halving

    # //mnist:bzl_halving's grid, read from mnist/BUILD another way (Starlark
    # parses as Python here): the call's `grid` argument.
    (call,) = [
        node
        for node in ast.walk(ast.parse((REPO / "mnist/BUILD").read_text()))
        if isinstance(node, ast.Call)
        and any(
            k.arg == "name" and ast.literal_eval(k.value) == "bzl_halving"
            for k in node.keywords
        )
    ]
    grid = next(k.value for k in call.keywords if k.arg == "grid")
    assert halving.alphas() == ast.literal_eval(grid)["alpha"]
    build = halving._build_file()
    assert build.count(json.dumps(halving.alphas())) == 2
    run = {"time": 30.0, "runs": [30.0], "processes": 120, "trained_epochs": 21}
    results = {
        "halving": {
            "alphas": halving.alphas(),
            **{f"sh_{m}": {**run, "best": "sh__alpha-0.01", "best_accuracy": 0.94} for m in ("sandboxed", "warm")},
            **{f"full_{m}": {**run, "trained_epochs": 81, "best": "full__alpha-0.03", "best_accuracy": 0.95} for m in ("sandboxed", "warm")},
        }
    }  # fmt: skip
    text = "\n".join(halving.render(results))
    assert (
        "| successive halving | sandboxed | 30.0 s | 120 | 21 | `sh__alpha-0.01` | 0.9400 |"
        in text
    )
    assert "| full grid, 9 epochs each | warm | 30.0 s | 120 | 81 |" in text


def test_the_tpe_part_renders_both_searches_side_by_side() -> None:
    import tpe

    def search(target: str, best: str, accuracy: float) -> dict:
        return {
            "target": target,
            "time": 30.0,
            "runs": [30.0],
            "processes": 21,
            "trials": 8,
            "best": best,
            "best_accuracy": accuracy,
            "accuracies": [accuracy, 0.9],
        }

    results = {
        "tpe": {
            "bayes": search("//mnist:bzl_bayes", "bzl_bayes__round-1__trial-1", 0.975),
            "random": search(
                "//mnist:bzl_random_search", "bzl_random_search__C-1", 0.97
            ),
        }
    }
    text = "\n".join(tpe.render(results))
    assert (
        "| `//mnist:bzl_bayes` (tpe, 4 rounds) | 8 | 30.0 s | 21 | "
        "`bzl_bayes__round-1__trial-1` | 0.9750 | 0.9750, 0.9000 |" in text
    )
    assert "| `//mnist:bzl_random_search` (random) | 8 | 30.0 s |" in text
    assert tpe.render({}) == []


def test_the_rules_python_part_compares_both_package_sources() -> None:
    import rules_python

    import trials

    assert 'load("@pypi//:requirements.bzl", "requirement")' in trials.search_build(
        12, "@pypi"
    )
    build = {
        "time": 10.0,
        "runs": [10.0],
        "processes": "19 processes: 3 internal, 16 worker.",
    }
    results = {
        "rules_python": {
            "trials": 12,
            "first_build": 120.0,
            "builds": {
                "python_env_sandboxed": {**build, "time": 20.0},
                "rules_python_sandboxed": {**build, "time": 21.0},
                "python_env_warm": {**build, "time": 8.0},
                "rules_python_warm": {**build, "time": 12.0},
            },
        }
    }
    text = "\n".join(rules_python.render(results))
    assert "| rules_python (`@pypi`) | 21.0 s | 12.0 s |" in text
    assert "| python_env (`@databazel_python`) | 20.0 s | 8.0 s |" in text
    [(target, measured, met)] = rules_python.verdicts(results)
    assert measured == "12.0 s vs 8.0 s = 1.50x" and met == "no"
    assert rules_python.verdicts({}) == [] and rules_python.render({}) == []
    assert f"| {target} | {measured} | no |" in render.render(
        {**_results(), **results}, None
    )
