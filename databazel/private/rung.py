"""One rung of successive halving: rank the trials that reached it, promote the best.

Bazel runs this tool (through tool.py) as::

    python3 -S tool.py rung --target //pkg:search__rung-1 --manifest MANIFEST.json

MANIFEST.json (written by the rule, see rungs.bzl)::

    {"epoch": 3, "metric": "accuracy", "mode": "max", "eta": 3,
     "trials": [{"name": "search__x-1", "metrics": "path/of/epoch-3/metrics.json",
                 "previous": "path/of/the/previous/rung's/decision" or null,
                 "decision": "path/to/write/this/rung's/decision"}, ...]}

A trial is alive at this rung if the previous rung promoted it (every trial is
alive at the first rung).  Of the n alive trials, the best max(1, n // eta) by
the metric at this rung's epoch are promoted: their decision file is
``{"status": "promoted"}``.  The others get a stop record naming this rung and
the epoch they trained to; a trial stopped by an earlier rung keeps that
rung's record, byte for byte.  A trial whose evaluation failed (a recorded
failure, ``allow_failure``) is stopped, never promoted.  Ties go to the
trial whose name sorts first.

Each trial's decision is a file of its own, holding nothing about the other
trials: when a trial is added to the search, the decisions that did not change
keep their bytes, and Bazel re-runs no epoch that depends on them.  On any
error no decision is written and one ``databazel: error: <target>: ...`` line
is printed.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


from contract import RunnerError, load_json, read_text
from outputs import run_tool, write_atomic
from records import (
    PROMOTED,
    StopRecord,
    format_record,
    parse_evaluation,
    read_decision,
    stop_record,
)


def _load_manifest(path: str) -> dict[str, Any]:
    manifest = load_json(read_text(path))
    ok = (
        isinstance(manifest, dict)
        and isinstance(manifest.get("epoch"), int)
        and isinstance(manifest.get("metric"), str)
        and manifest.get("mode") in ("max", "min")
        and isinstance(manifest.get("eta"), int)
        and manifest["eta"] >= 2
        and isinstance(manifest.get("trials"), list)
        and all(
            isinstance(t, dict)
            and all(isinstance(t.get(k), str) for k in ("name", "metrics", "decision"))
            and (t.get("previous") is None or isinstance(t["previous"], str))
            for t in manifest["trials"]
        )
    )
    if not ok:
        raise RunnerError(f"manifest {path} is not a rung manifest")
    return manifest


def decide(target: str, manifest: dict[str, Any]) -> dict[str, str]:
    """Each trial's decision file content, by trial name."""
    epoch, metric, mode = manifest["epoch"], manifest["metric"], manifest["mode"]
    decisions: dict[str, str] = {}
    alive: list[str] = []
    scores: dict[str, float] = {}
    for trial in manifest["trials"]:
        name = trial["name"]
        earlier: StopRecord | None = (
            read_decision(trial["previous"]) if trial["previous"] else None
        )
        if earlier is not None:
            decisions[name] = format_record(earlier)
            continue
        alive.append(name)
        try:
            evaluation = parse_evaluation(read_text(trial["metrics"]))
        except RunnerError as e:
            raise RunnerError(
                f"cannot read the metrics of trial {name} at epoch {epoch}: {e}"
            ) from None
        if evaluation["stop"] is not None:
            raise RunnerError(
                f"trial {name} was promoted to this rung, but its evaluation at "
                f"epoch {epoch} is a stop record"
            )
        if evaluation["failure"] is not None:
            continue  # a failed trial is never promoted
        if metric not in evaluation["metrics"]:
            raise RunnerError(
                f"trial {name} has no metric {json.dumps(metric)} at epoch {epoch}; "
                f"its metrics are: {', '.join(sorted(evaluation['metrics']))}"
            )
        scores[name] = evaluation["metrics"][metric]
    keep = max(1, len(alive) // manifest["eta"])
    sign = -1 if mode == "max" else 1
    promoted = set(sorted(scores, key=lambda n: (sign * scores[n], n))[:keep])
    for name in alive:
        decisions[name] = format_record(
            PROMOTED if name in promoted else stop_record(epoch, target)
        )
    return decisions


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rung.py", description="databazel rung")
    parser.add_argument("--target", required=True)
    parser.add_argument("--manifest", required=True)
    args = parser.parse_args(argv)
    outputs: list[str] = []

    def work() -> None:
        manifest = _load_manifest(args.manifest)
        outputs.extend(t["decision"] for t in manifest["trials"])
        decisions = decide(args.target, manifest)
        for trial in manifest["trials"]:
            os.makedirs(os.path.dirname(trial["decision"]) or ".", exist_ok=True)
            write_atomic(trial["decision"], decisions[trial["name"]])

    return run_tool(args.target, "rung", outputs, work)
