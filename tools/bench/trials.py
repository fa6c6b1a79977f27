"""Benchmark part `trials`: the MNIST scripts run five ways, and the fresh-server no-op build.

Measures, in one run and in one fixture workspace (its Python environment is
requirements_lock.txt):

* the in-process limit: every trial's train.py and evaluate.py run back to
  back in one Python process with `runpy` (numpy and scikit-learn imported
  once; `in_process.py`);
* the serial loop of bare processes (`bare_loop.py`);
* databazel in its three modes (common.MODES): warm (the default: persistent
  workers, each trial isolated), sandboxed (`--@databazel//databazel:warm=false`)
  and warm unisolated (`--@databazel//databazel:isolate=false`, what the
  isolation costs), with `--jobs=1` and `--jobs=2`, every build after
  `bazel clean` (which also stops the workers, so the warm builds pay their
  start-up);
* the marginal wall time per trial with `--jobs=2`, from a 12- and a 24-trial
  search (T(24) - T(12)) / 12, so that fixed costs cancel, against the same
  marginal time of the in-process limit;
* a no-op build of the 12-trial search on a fresh Bazel server (server start
  included, as a user meets it) against the same for an empty filegroup.

`measure()` returns plain data; `render()` turns it into Markdown rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import MODES, median, processes, MODE_NAMES


REPO = Path(__file__).resolve().parents[2]

# The 12 trials of //mnist:bzl_search; the 24-trial search adds a second tol.
GRID = {"C": ["0.01", "0.1", "1", "10"], "max_iter": ["50", "100", "200"]}
TOLS = {12: ["0.0001"], 24: ["0.0001", "0.00011"]}

TARGETS = {
    "overhead": ("per-trial overhead, trivial scripts, default mode (warm) <= 0.03 s", 0.03),
    "overhead_sandboxed": ("per-trial overhead, trivial scripts, sandboxed <= 0.15 s", 0.15),
    "mnist_warm": ("12-trial MNIST search `--jobs=2`, default mode <= 0.2x the serial loop", 0.2),
    "marginal": ("marginal wall time per MNIST trial `--jobs=2`, default mode <= 0.6x the in-process limit's", 0.6),
    "fresh_noop": ("fresh-server no-op build of the 12-trial search <= 2x that of a trivial target", 2.0),
}  # fmt: skip

# The builds of part `trials`: (mode, size, jobs).
BUILDS = [
    (mode, size, jobs)
    for mode in ("sandboxed", "warm", "unisolated")
    for size, jobs in ((12, 1), (12, 2), (24, 2))
    if mode != "unisolated" or jobs == 2
]


def search_build(size: int, hub: str = "@fixture_python") -> str:
    """The BUILD file of the `size`-trial MNIST search, its packages from `hub`."""
    grid = dict(GRID, tol=TOLS[size])
    return f"""load("@databazel//databazel:defs.bzl", "hyperparam_search")
load("{hub}//:requirements.bzl", "requirement")

hyperparam_search(
    name = "s",
    deps = ["//mnist:lib", requirement("scikit-learn")],
    eval_executable = "//mnist:evaluate.py",
    grid = {json.dumps(grid)},
    metric = "accuracy",
    test_data = "//mnist:data/mnist.npz",
    train_executable = "//mnist:train.py",
    training_data = "//mnist:data/mnist.npz",
)
"""


def setup(ws: Any, hub: str = "@fixture_python") -> None:
    """The MNIST scripts and data in the fixture workspace, and the two searches."""
    (ws.root / "mnist/data").mkdir(parents=True, exist_ok=True)
    for name in ("train.py", "evaluate.py", "lib.py"):
        shutil.copy(REPO / "mnist" / name, ws.root / "mnist" / name)
    shutil.copy(REPO / "mnist/data/mnist.npz", ws.root / "mnist/data/mnist.npz")
    ws.write(
        "mnist/BUILD",
        f"""
        load("{hub}//:requirements.bzl", "requirement")

        exports_files(["train.py", "evaluate.py", "data/mnist.npz"])

        # buildifier: disable=native-py
        py_library(
            name = "lib",
            srcs = ["lib.py"],
            visibility = ["//visibility:public"],
            deps = [requirement("numpy")],
        )
        """,
    )
    for size in TOLS:
        ws.write(f"mnist{size}/BUILD", search_build(size, hub))


def _cold(ws: Any, target: str, *flags: str) -> tuple[float, Any]:
    ws.bazel("clean", check=True)
    start = time.perf_counter()
    result = ws.build(target, flags=flags)
    return time.perf_counter() - start, result


def measure(ws: Any, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    from bare_loop import action_env, mnist_loop

    setup(ws)
    ws.build("//mnist12:s", "//mnist24:s")  # the environment, and the trials once
    out: dict[str, Any] = {"builds": {}}
    for mode, size, jobs in BUILDS:
        times = []
        for _ in range(reps):
            elapsed, result = _cold(
                ws, f"//mnist{size}:s", f"--jobs={jobs}", *MODES[mode]
            )
            times.append(elapsed)
        key = f"{mode}_{size}_jobs{jobs}"
        out["builds"][key] = {
            "time": median(times),
            "runs": times,
            "processes": processes(result),
        }
        log(f"mnist {key}: {median(times):.1f} s ({processes(result)})")

    # The reports of both searches (each build above began with `bazel clean`).
    ws.build("//mnist12:s", "//mnist24:s")
    python = ws.output_base / "external/fixture_python/venv/bin/python3"
    bazel = ("bazel", f"--output_base={ws.output_base}")
    env = action_env("//mnist12:s__C-1__max_iter-100__tol-0.0001", bazel, cwd=ws.root)
    data = ws.root / "mnist/data/mnist.npz"
    for size in TOLS:
        trials = json.loads(ws.bin(f"mnist{size}/s.json").read_text())["trials"]
        loops = [
            mnist_loop(python, env, trials, data, cwd=ws.root)[0] for _ in range(reps)
        ]
        out[f"serial_loop_{size}"] = {"time": median(loops), "runs": loops}
        limits = [_in_process(python, env, trials, data, ws.root) for _ in range(reps)]
        out[f"in_process_{size}"] = {"time": median(limits), "runs": limits}
        log(
            f"mnist {size} trials: serial loop {median(loops):.1f} s, in-process {median(limits):.1f} s"
        )

    noop, trivial = [], []
    ws.build("//mnist12:s", "//bench:empty")
    for _ in range(reps):
        for times, target in ((noop, "//mnist12:s"), (trivial, "//bench:empty")):
            ws.shutdown()
            start = time.perf_counter()
            result = ws.build(target)
            times.append(time.perf_counter() - start)
            assert result.executed() == 0, result.stderr[-800:]
    out["fresh_noop"] = {
        "search": median(noop),
        "search_runs": noop,
        "trivial": median(trivial),
        "trivial_runs": trivial,
    }
    log(
        f"fresh-server no-op: search {median(noop):.1f} s, trivial target {median(trivial):.1f} s"
    )
    return out  # fmt: skip


def _in_process(
    python: Path, env: dict[str, str], trials: list[dict], data: Path, cwd: Path
) -> float:
    """Wall seconds of in_process.py over `trials` (it times itself, imports included)."""
    proc = subprocess.run(
        [str(python), str(Path(__file__).with_name("in_process.py")), str(data)],
        input=json.dumps([t["hyperparams"] for t in trials]),
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(proc.stdout)["seconds"])


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each target that was measured."""
    rows = []

    def row(key: str, measured: str, value: float) -> None:
        text, bound = TARGETS[key]
        rows.append((text, measured, "yes" if value <= bound else "no"))

    for part in ("overhead", "overhead_sandboxed"):
        if part in results:
            o = results[part]["overhead"]
            row(part, f"{o:.3f} s", o)
    t = results.get("trials")
    if t:
        b, loop = t["builds"], t["serial_loop_12"]["time"]
        x = b["warm_12_jobs2"]["time"]
        row("mnist_warm", f"{x:.1f} s vs {loop:.1f} s = {x / loop:.2f}x", x / loop)
        warm = (b["warm_24_jobs2"]["time"] - b["warm_12_jobs2"]["time"]) / 12
        limit = (t["in_process_24"]["time"] - t["in_process_12"]["time"]) / 12
        row(
            "marginal",
            f"{warm:.2f} s vs {limit:.2f} s = {warm / limit:.2f}x",
            warm / limit,
        )
        f = t["fresh_noop"]
        row(
            "fresh_noop",
            f"{f['search']:.1f} s vs {f['trivial']:.1f} s = {f['search'] / f['trivial']:.1f}x",
            f["search"] / f["trivial"],
        )
    return rows  # fmt: skip


def render(results: dict[str, Any]) -> list[str]:
    t = results.get("trials")
    if not t:
        return []
    b = t["builds"]
    lines = [
        "## MNIST trials, every way",
        "",
        "The classic scripts (`mnist/train.py`, `mnist/evaluate.py`: LogisticRegression on the "
        "bundled digits) in a fixture workspace, a 12-trial grid (the trials of `//mnist:bzl_search`, "
        "without plots) and a 24-trial grid (the same with a second `tol`). Every build runs after "
        "`bazel clean`, which also stops the persistent workers.",
        "",
        "| Way | 12 trials | 24 trials | marginal per trial (24 - 12) / 12 |",
        "| --- | --- | --- | --- |",
    ]
    for key, name in (
        ("in_process", "in-process limit (one process, `runpy`, imports once)"),
        ("serial_loop", "serial loop of bare processes"),
    ):
        a, c = t[f"{key}_12"]["time"], t[f"{key}_24"]["time"]
        lines.append(f"| {name} | {a:.1f} s | {c:.1f} s | {(c - a) / 12:.2f} s |")
    for mode in ("sandboxed", "warm", "unisolated"):
        if f"{mode}_12_jobs1" in b:
            j1 = b[f"{mode}_12_jobs1"]["time"]
            lines.append(
                f"| databazel {MODE_NAMES[mode]}, `--jobs=1` | {j1:.1f} s | | |"
            )
        if f"{mode}_12_jobs2" in b:
            a, c = b[f"{mode}_12_jobs2"]["time"], b[f"{mode}_24_jobs2"]["time"]
            lines.append(
                f"| databazel {MODE_NAMES[mode]}, `--jobs=2` | {a:.1f} s | {c:.1f} s | {(c - a) / 12:.2f} s |"
            )
    f = t["fresh_noop"]
    lines += [
        "",
        "Processes of each build, as Bazel counted them: "
        + "; ".join(f"{k}: {v['processes']}" for k, v in b.items()),
        "",
        f"No-op build on a fresh Bazel server (server start included): the 12-trial search "
        f"{f['search']:.1f} s (runs {', '.join(f'{x:.1f}' for x in f['search_runs'])}), "
        f"an empty filegroup in the same workspace {f['trivial']:.1f} s "
        f"(runs {', '.join(f'{x:.1f}' for x in f['trivial_runs'])}).",
        "",
    ]
    return lines  # fmt: skip
