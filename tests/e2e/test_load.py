"""A search of 1,000 trials builds end to end (issue 6: load).

The trials are trivial shell scripts, so what is measured is databazel's and
Bazel's own cost. The wall time and the Bazel server's peak memory are printed
(`tools/test.sh -s -k thousand`); the measured figures live in docs/benchmarks.md
(tools/bench/run.py), and docs/reliability.md says what this test shows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bazel_harness import Workspace

LOAD = 'load("@databazel//databazel:defs.bzl", "hyperparam_search")\n'


def test_a_search_of_a_thousand_trials_builds(ws: Workspace) -> None:
    ws.write(
        "load/train.sh",
        """#!/bin/sh
        # SCRIPT --data DATA --model-output-path OUT --hyperparams JSON
        printf '%s' "$6" > "$4"
        """,
        executable=True,
    )
    ws.write(
        "load/evaluate.sh",
        """#!/bin/sh
        # SCRIPT --model-path MODEL --data-path DATA --output-dir DIR
        printf '{"accuracy": %s}' "$(wc -c < "$2")" > "$6/metrics.json"
        """,
        executable=True,
    )
    ws.write("load/data.txt", "x\n")
    ws.write(
        "load/BUILD",
        LOAD
        + """
sh_binary(name = "train", srcs = ["train.sh"])

sh_binary(name = "evaluate", srcs = ["evaluate.sh"])

hyperparam_search(
    name = "l",
    eval_executable = ":evaluate",
    grid = {
        "a": [str(i) for i in range(10)],
        "b": [str(i) for i in range(10)],
        "c": ["x" * i for i in range(1, 11)],
    },
    metric = "accuracy",
    test_data = "data.txt",
    train_executable = ":train",
    training_data = "data.txt",
)
""",
    )
    start = time.monotonic()
    result = ws.build("//load:l")
    elapsed = time.monotonic() - start
    assert result.executed("DatabazelTrain") == 1000
    assert result.executed("DatabazelEvaluate") == 1000
    report = json.loads(ws.bin("load/l.json").read_text())
    assert len(report["trials"]) == 1000
    # Each trial's metric is the size of its model, the hyperparameters' JSON.
    for trial in report["trials"]:
        model = json.dumps(trial["hyperparams"], sort_keys=True, separators=(",", ":"))
        assert trial["metrics"] == {"accuracy": len(model)}, trial
    # The longest JSON wins; the 100 trials with c = "x" * 10 tie, and a tie
    # keeps grid order (a, then b, vary slowest), so the first of them is best.
    assert report["best"]["hyperparams"] == {"a": "0", "b": "0", "c": "x" * 10}
    accuracies = [t["metrics"]["accuracy"] for t in report["trials"]]
    assert accuracies == sorted(accuracies, reverse=True)
    peak = _peak_rss_mib(ws)
    print(
        f"\n1000-trial search: {elapsed:.1f} s wall, Bazel server peak RSS {peak} MiB"
    )


def _peak_rss_mib(ws: Workspace) -> int | None:
    pid = ws.server_pid()
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return None
