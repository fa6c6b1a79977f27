#!/usr/bin/env python3
"""Baseline for a search's cold build: the same train and evaluate scripts, run serially as bare processes.

Reads the trials (their hyperparameters) from a search report that Bazel built,
runs `mnist/train.py` and `mnist/evaluate.py` for each with the interpreter of
@databazel_python and the environment of the rules' actions (from `bazel aquery`), and prints the
wall time of the whole loop. Compare it with a cold `bazel build --jobs=N` of
the search:

    bazel build //mnist:bzl_search
    tools/bench/bare_loop.py --report bazel-bin/mnist/bzl_search.json
    bazel clean && time bazel build --jobs=2 //mnist:bzl_search

`tools/bench/run.py` uses `mnist_loop` the same way, next to the builds it times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def action_env(
    target: str, bazel: Sequence[str] = ("bazel",), cwd: Path = REPO
) -> dict[str, str]:
    """The environment Bazel gives the training action of `target` (from `bazel aquery`)."""
    query = f'mnemonic("DatabazelTrain", {target})'
    out = subprocess.run(
        [*bazel, "aquery", query, "--output=jsonproto"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    action = json.loads(out)["actions"][0]
    return {v["key"]: v["value"] for v in action.get("environmentVariables", [])}


def mnist_loop(
    python: Path,
    env: dict[str, str],
    trials: list[dict],
    data: Path,
    cwd: Path = REPO,
) -> tuple[float, list[tuple[str, float, float]]]:
    """Runs train.py then evaluate.py for each trial, serially; (total wall s, per-trial (name, train s, evaluate s))."""
    per_trial = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i, trial in enumerate(trials):
            model, out = Path(tmp) / f"{i}.pkl", Path(tmp) / f"{i}.out"
            t0 = time.perf_counter()
            subprocess.run(
                [
                    str(python),
                    "mnist/train.py",
                    "--data",
                    str(data),
                    "--model-output-path",
                    str(model),
                    "--hyperparams",
                    json.dumps(trial["hyperparams"], sort_keys=True),
                ],
                cwd=cwd,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            t1 = time.perf_counter()
            subprocess.run(
                [
                    str(python),
                    "mnist/evaluate.py",
                    "--model-path",
                    str(model),
                    "--data-path",
                    str(data),
                    "--output-dir",
                    str(out),
                ],
                cwd=cwd,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            per_trial.append((trial["name"], t1 - t0, time.perf_counter() - t1))
        total = time.perf_counter() - start
    return total, per_trial


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--report", type=Path, default=REPO / "bazel-bin/mnist/bzl_search.json"
    )
    parser.add_argument("--data", type=Path, default=REPO / "mnist/data/mnist.npz")
    args = parser.parse_args()

    output_base = subprocess.run(
        ["bazel", "info", "output_base"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    python = Path(output_base) / "external/databazel_python/venv/bin/python3"
    env = action_env("//mnist:bzl_training")
    trials = json.loads(args.report.read_text())["trials"]
    total, per_trial = mnist_loop(python, env, trials, args.data)
    for name, train, evaluate in per_trial:
        print(f"{name}: train {train:.2f} s, evaluate {evaluate:.2f} s")
    print(
        f"{len(trials)} trials, serial bare loop: {total:.1f} s wall "
        f"(train {sum(t for _, t, _ in per_trial):.1f} s + evaluate {sum(e for _, _, e in per_trial):.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
