"""Benchmark part `rules_python`: the same trials with rules_python's packages and with python_env's.

One workspace (tests/rules_python_workspace.py): rules_python 0.9.0's
`pip_parse` over requirements_lock.txt beside databazel's python_env (the
interpreter, and scikit-learn with its dependencies). Two copies of the
12-trial MNIST grid of part `trials` (tools/bench/trials.py) differ only in
where `requirement("scikit-learn")` comes from: `@databazel_python` or
`@pypi`. Each is built sandboxed (`--@databazel//databazel:warm=false`) and
warm (the default), `--jobs=2`, after `bazel clean` (which also
stops the workers, so a warm build pays their start-up and first imports).

`measure()` returns plain data; `render()` and `verdicts()` turn it into
Markdown rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import MODES, loadavg, median

import trials

SOURCES = {"python_env": "@databazel_python", "rules_python": "@pypi"}
SIZE = 12  # the trials of //mnist:bzl_search (tools/bench/trials.py)
TARGET = (
    "rules_python in warm workers <= 1.3x python_env's (12-trial MNIST grid, `--jobs=2`)",
    1.3,
)


def setup(ws: Any) -> None:
    """The MNIST scripts (their library's numpy from python_env) and one search per package source."""
    trials.setup(ws, SOURCES["python_env"])
    for source, hub in SOURCES.items():
        ws.write(f"{source}/BUILD", trials.search_build(SIZE, hub))


def measure(
    workspace_class: Any, work: Path, reps: int, log: Callable[[str], None]
) -> dict[str, Any]:
    import rules_python_workspace as rpw

    host = rpw.host_python()
    ws = rpw.create(
        work / "rules_python_ws",
        work / "rules_python_output_base",
        rpw.tool_wheels(work / "rules_python_distdir"),
        host,
        workspace_class=workspace_class,
    )
    ws.write("pypi_lock.txt", rpw.lock_blocks())
    setup(ws)
    try:
        start = time.monotonic()
        ws.build("//python_env:s", "//rules_python:s")  # fetches both, not timed
        out: dict[str, Any] = {"first_build": time.monotonic() - start, "builds": {}}
        out["load"] = [loadavg()]
        out["trials"] = SIZE
        for mode in ("sandboxed", "warm"):
            flags = MODES[mode]
            for source in SOURCES:
                times, processes = [], ""
                for _ in range(reps):
                    ws.bazel("clean", check=True)
                    start = time.monotonic()
                    result = ws.build(f"//{source}:s", flags=("--jobs=2", *flags))
                    times.append(time.monotonic() - start)
                    line = re.search(r"INFO: \d+ processes: [^\n]*", result.stderr)
                    processes = line.group(0)[6:] if line else ""
                if (mode == "warm") != (" worker" in processes):
                    raise RuntimeError(f"the {mode} build of {source} ran: {processes}")
                out["builds"][f"{source}_{mode}"] = {
                    "time": median(times),
                    "runs": times,
                    "processes": processes,
                }
                log(
                    f"rules_python part: {source} {mode}: {median(times):.1f} s ({processes})"
                )
        out["load"].append(loadavg())
        return out
    finally:
        ws.remove()


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    x = results.get("rules_python")
    if not x:
        return []
    b = x["builds"]
    pip, env = b["rules_python_warm"]["time"], b["python_env_warm"]["time"]
    text, bound = TARGET
    return [
        (
            text,
            f"{pip:.1f} s vs {env:.1f} s = {pip / env:.2f}x",
            "yes" if pip / env <= bound else "no",
        )
    ]


def render(results: dict[str, Any]) -> list[str]:
    x = results.get("rules_python")
    if not x:
        return []
    b = x["builds"]
    lines = [
        "## rules_python's packages against python_env's",
        "",
        f"The same {x['trials']}-trial MNIST grid (`mnist/train.py`, `mnist/evaluate.py`; the grid of `//mnist:bzl_search`) in one workspace "
        'whose `requirement("scikit-learn")` comes from rules_python 0.9.0\'s `pip_parse` (`@pypi`) or '
        "from databazel's `python_env` (`@databazel_python`), on python_env's interpreter; `--jobs=2`, "
        "every build after `bazel clean` (the warm builds start their workers). "
        f"First build of both (fetching the packages and running every trial once): {x['first_build']:.0f} s.",
        "",
        "| Packages | sandboxed | warm |",
        "| --- | --- | --- |",
    ]
    for source, hub in SOURCES.items():
        s, w = b[f"{source}_sandboxed"], b[f"{source}_warm"]
        lines.append(f"| {source} (`{hub}`) | {s['time']:.1f} s | {w['time']:.1f} s |")
    if x.get("load"):
        lines += [
            "",
            f"Load average before and after the timed builds: {x['load'][0]}, {x['load'][-1]}.",
        ]
    lines += [
        "",
        "Sandboxed, rules_python's trials pay for its repositories' layout: no precompiled bytecode "
        "(each trial compiles the modules it imports) and the packages' test suites among the inputs. "
        "Warm, the worker imports the packages once either way.",
        "",
        "Processes of each build, as Bazel counted them: "
        + "; ".join(f"{k}: {v['processes']}" for k, v in b.items()),
        "",
    ]
    return lines
