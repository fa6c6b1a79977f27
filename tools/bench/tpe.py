"""Benchmark part `tpe`: the model-based search against random search, same space and trials.

`//mnist:bzl_bayes` (`strategy = "tpe"`, rounds of trials suggested by Optuna's
TPE sampler) and `//mnist:bzl_random_search` (the same search space and seed,
as many trials, drawn at once) are built in this checkout with the output base
of part `mnist` (an output base of the bench's own). Each is built after `bazel clean` with
`--jobs=2`; the bench records the wall time (median of the repeats), Bazel's
count of processes, and the best trial and accuracy of the report (the same on
every repeat: the searches are deterministic).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

SEARCHES = (("bayes", "//mnist:bzl_bayes"), ("random", "//mnist:bzl_random_search"))


def measure(
    workspace: Any, reps: int, log: Callable[[str], None], median: Callable
) -> dict[str, Any]:
    """Cold builds of both searches in `workspace` (this checkout, an output base of its own)."""
    workspace.build(*(t for _, t in SEARCHES))  # fetches the environment
    out: dict[str, Any] = {}
    for key, target in SEARCHES:
        times = []
        for _ in range(reps):
            workspace.bazel("clean", check=True)
            start = time.perf_counter()
            result = workspace.build(target, flags=("--jobs=2",))
            times.append(time.perf_counter() - start)
        name = target.split(":")[1]
        report = json.loads(workspace.bin(f"mnist/{name}.json").read_text())
        rounds = sorted({t["round"] for t in report["trials"] if "round" in t})
        out[key] = {
            "target": target,
            "time": median(times),
            "runs": times,
            "processes": result.executed(),
            "trials": len(report["trials"]),
            "rounds": len(rounds) or None,
            "best": report["best"]["name"],
            "best_accuracy": report["best"]["metrics"]["accuracy"],
            "accuracies": sorted(
                (
                    t["metrics"]["accuracy"]
                    for t in report["trials"]
                    if t["status"] == "ok"
                ),
                reverse=True,
            ),
        }
        log(
            f"tpe {target}: {median(times):.1f} s, best accuracy "
            f"{out[key]['best_accuracy']:.4f} ({out[key]['best']})"
        )
    return out


def render(results: dict[str, Any]) -> list[str]:
    t = results.get("tpe")
    if not t:
        return []
    lines = [
        "## Model-based search (TPE) against random search",
        "",
        "`//mnist:bzl_bayes` (4 rounds of 2 trials, each round after the first suggested "
        "by Optuna's TPE sampler from the earlier rounds' accuracies) against "
        "`//mnist:bzl_random_search` (8 trials drawn at once), over the same search space "
        "with the same seed, in this checkout. Each build after `bazel clean`, `--jobs=2`; "
        "the wall time includes the plots of both reports. A search's trials and results "
        "are the same on every repeat.",
        "",
        "| Search | Trials | Wall time (median) | Processes (Bazel's count) | Best trial | Best accuracy | Accuracies, best first |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, what in (("bayes", "tpe, 4 rounds"), ("random", "random")):
        r = t[key]
        accuracies = ", ".join(f"{a:.4f}" for a in r["accuracies"])
        lines.append(
            f"| `{r['target']}` ({what}) | {r['trials']} | {r['time']:.1f} s | "
            f"{r['processes']} | `{r['best']}` | {r['best_accuracy']:.4f} | {accuracies} |"
        )
    return lines + [""]  # fmt: skip
