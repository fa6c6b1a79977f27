#!/usr/bin/env python3
"""The in-process limit of a search: every trial's scripts in one Python process.

Reads a JSON list of hyperparameter dicts on stdin and runs `mnist/train.py`
then `mnist/evaluate.py` for each with `runpy`, in this process, so numpy and
scikit-learn are imported once. Prints {"seconds": wall time, imports
included}. Run it from a directory holding `mnist/` with the interpreter and
environment of the trials' actions (`tools/bench/trials.py` does).

No trial can be faster than this: it is the scripts' own work with no process,
sandbox or Bazel cost at all.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import sys
import tempfile
import time
from pathlib import Path


def run(script: str, argv: list[str]) -> None:
    """Runs `script` with `argv` in this process; its stdout goes to stderr."""
    sys.argv = [script, *argv]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code:
            raise


def main() -> int:
    start = time.perf_counter()
    data = sys.argv[1]
    trials = json.load(sys.stdin)
    sys.path.insert(0, str(Path("mnist").resolve()))
    with tempfile.TemporaryDirectory() as tmp:
        for i, hyperparams in enumerate(trials):
            model, out = f"{tmp}/{i}.pkl", f"{tmp}/{i}.out"
            run("mnist/train.py", ["--data", data, "--model-output-path", model,
                                   "--hyperparams", json.dumps(hyperparams, sort_keys=True)])  # fmt: skip
            run("mnist/evaluate.py", ["--model-path", model, "--data-path", data, "--output-dir", out])  # fmt: skip
    json.dump(
        {"seconds": time.perf_counter() - start, "trials": len(trials)}, sys.stdout
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
