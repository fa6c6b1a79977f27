"""Benchmark part `profile`: where a trial's time goes in a warm worker.

The 24-trial MNIST search of part `trials` (tools/bench/trials.py), built in
the default mode (warm workers, isolated trials) with `--jobs=2` after
`bazel clean`, with Bazel's `--profile`. Two sources, per training and per
evaluation action (medians over the 24 of each):

* Bazel's profile: each action's wall time as Bazel saw it, from scheduling
  it to recording its outputs (`action processing` events);
* the workers' logs (`bazel-workers/*.log`): the one line a databazel worker
  writes per request (worker.py `log_times`): the runner before it starts the
  script, the fork and the namespaces until the script runs, the script, its
  process's exit, the runner afterwards (outputs, metrics), and the imports
  the parent learned.

What Bazel spends around a request is the action's wall time less the
worker's. `measure()` returns plain data; `render()` turns it into Markdown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trials
from common import median, processes, timed

SIZE = 24
LINE = re.compile(
    r"databazel worker: (\S+) (train|evaluate) ([0-9.]+) s: (.*); learn ([0-9.]+)"
)
# The worker's intervals, in the order of its log line.
PHASES = ("runner_before", "fork_isolate", "script", "exit", "runner_after")
NAMES = {
    "bazel": "Bazel around the request (scheduling, the request, outputs, the action cache)",
    "runner_before": "the runner, until the script starts (arguments, data, the private execroot)",
    "fork_isolate": "fork and namespaces, until the script runs",
    "script": "the script itself",
    "exit": "the script's process ending (its namespaces torn down)",
    "runner_after": "the runner afterwards (outputs moved, checked, metrics)",
    "learn": "the parent importing what it learned (between requests)",
}


def parse_worker_line(line: str) -> dict[str, Any] | None:
    """The fields of one `databazel worker:` log line, or None for another line."""
    match = LINE.search(line)
    if not match:
        return None
    target, kind, total, parts, learn = match.groups()
    values = [float(part.rsplit(" ", 1)[1]) for part in parts.split(", ")]
    out: dict[str, Any] = {
        "target": target,
        "kind": kind,
        "worker": float(total),
        "learn": float(learn),
    }
    if len(values) == len(PHASES):
        out.update(zip(PHASES, values))
    return out


def action_times(profile: Path) -> dict[tuple[str, str], float]:
    """(kind, target) -> seconds of each training and evaluation in Bazel's profile."""
    events = json.loads(profile.read_text())["traceEvents"]
    out = {}
    for e in events:
        if e.get("ph") != "X" or e.get("cat") != "action processing":
            continue
        name = e.get("name", "")
        match = re.match(r"(Training|Evaluating) (//\S+?)(?::? |,|$)", name)
        if match:
            kind = "train" if match.group(1) == "Training" else "evaluate"
            out[(kind, match.group(2).rstrip(":,"))] = e["dur"] / 1e6
    return out


def measure(ws: Any, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    trials.setup(ws)
    target = f"//mnist{SIZE}:s"
    ws.build(target)  # the environment, once
    ws.bazel("clean", check=True)
    logs = ws.output_base / "bazel-workers"
    seen = {p: p.stat().st_size for p in logs.glob("*.log")} if logs.exists() else {}
    profile = ws.output_base.parent / "warm_profile.json"
    wall, result = timed(
        lambda: ws.build(target, flags=("--jobs=2", f"--profile={profile}"))
    )
    lines = []
    for path in sorted(logs.glob("*.log")):
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(seen.get(path, 0))
            lines += [r for r in map(parse_worker_line, f) if r]
    bazel = action_times(profile)
    out: dict[str, Any] = {"trials": SIZE, "wall": wall, "processes": processes(result)}
    for kind in ("train", "evaluate"):
        rows = [
            r
            for r in lines
            if r["kind"] == kind and r["target"].startswith(f"//mnist{SIZE}:")
        ]
        for r in rows:
            if (kind, r["target"]) in bazel:
                r["bazel"] = bazel[(kind, r["target"])] - r["worker"]
        out[kind] = {
            key: median([r[key] for r in rows if key in r])
            for key in ("bazel", "worker", *PHASES, "learn")
        } | {"n": len(rows), "matched": sum("bazel" in r for r in rows)}
        log(
            f"profile {kind}: "
            + ", ".join(
                f"{k} {v:.3f}" for k, v in out[kind].items() if isinstance(v, float)
            )
        )
    return out


def render(results: dict[str, Any]) -> list[str]:
    p = results.get("profile")
    if not p:
        return []
    lines = [
        "## Where a trial's time goes in a warm worker",
        "",
        f"The {p['trials']}-trial MNIST search of part `trials`, default mode, `--jobs=2`, after "
        f"`bazel clean`: {p['wall']:.1f} s ({p['processes']}). Medians per action, in seconds, "
        "from Bazel's `--profile` and the workers' logs (one line per request, "
        "`databazel/private/worker.py`); a trial is one training and one evaluation. What is "
        "not the script is databazel's and Bazel's share.",
        "",
        "| | training | evaluation |",
        "| --- | --- | --- |",
    ]
    for key in ("bazel", *PHASES, "learn"):
        cells = [p[kind].get(key) for kind in ("train", "evaluate")]
        lines.append(
            f"| {NAMES[key]} | "
            + " | ".join("-" if c is None or c != c else f"{c:.3f}" for c in cells)
            + " |"
        )
    t, e = p["train"], p["evaluate"]
    total = [
        sum(
            x[k]
            for k in ("bazel", *PHASES)
            if x.get(k) == x.get(k) and x.get(k) is not None
        )
        for x in (t, e)
    ]
    lines += [
        f"| **the action, as Bazel saw it** | **{total[0]:.3f}** | **{total[1]:.3f}** |",
        "",
        f"Actions matched in both sources: {t['matched']} of {t['n']} trainings, "
        f"{e['matched']} of {e['n']} evaluations.",
        "",
    ]
    return lines
