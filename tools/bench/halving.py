"""Benchmark part `halving`: successive halving against the full grid over the same trials.

In the fixture workspace of part `trials` (its Python environment is
requirements_lock.txt), two searches over the 9 alphas of
`//mnist:bzl_halving` (read from mnist/BUILD), both with
`mnist/train_epochs.py`:

* `//halving:sh`: `successive_halving(min_epochs = 1, max_epochs = 9, eta = 3)`,
  as `//mnist:bzl_halving`;
* `//halving:full`: every trial trained 9 epochs (`epochs = 9`).

Each is built after `bazel clean` with `--jobs=2`, sandboxed and warm (the default). For
each build the bench records the wall time, the epochs that ran the training
script (checkpoints that are not a stop record) and the best trial and metric
of its report.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import MODES, median

REPO = Path(__file__).resolve().parents[2]
STOPPED = b"databazel stopped trial v1\n"


def alphas() -> list[str]:
    """The alphas of //mnist:bzl_halving, from mnist/BUILD."""
    text = (REPO / "mnist/BUILD").read_text()
    block = text[text.index('name = "bzl_halving"') :]
    grid = re.search(r'"alpha": \[([^\]]*)\]', block)
    assert grid, "no alpha grid in //mnist:bzl_halving"
    return re.findall(r'"([^"]+)"', grid.group(1))


def _build_file() -> str:
    grid = json.dumps({"alpha": alphas()})
    common = f"""
    deps = ["//mnist:lib", requirement("scikit-learn")],
    eval_executable = "//mnist:evaluate.py",
    grid = {grid},
    metric = "accuracy",
    model_file = "model.pkl",
    test_data = "//mnist:data/mnist.npz",
    train_executable = "//mnist:train_epochs.py",
    training_data = "//mnist:data/mnist.npz",
"""
    return f"""load("@databazel//databazel:defs.bzl", "hyperparam_search", "successive_halving")
load("@fixture_python//:requirements.bzl", "requirement")

hyperparam_search(
    name = "sh",
    early_stopping = successive_halving(min_epochs = 1, max_epochs = 9, eta = 3),{common})

hyperparam_search(
    name = "full",
    epochs = 9,{common})
"""


def setup(ws: Any) -> None:
    import trials

    trials.setup(ws)
    shutil.copy(REPO / "mnist/train_epochs.py", ws.root / "mnist/train_epochs.py")
    build = (ws.root / "mnist/BUILD").read_text()
    ws.write(
        "mnist/BUILD",
        build.replace('"evaluate.py",', '"evaluate.py", "train_epochs.py",', 1),
    )
    ws.write("halving/BUILD", _build_file())


def trained_epochs(ws: Any, search: str) -> int:
    """Checkpoints of `search` that ran the training script (not a stop record)."""
    root = ws.bin("halving")
    return sum(
        1
        for path in root.glob(f"{search}__*/model.epoch-*.pkl")
        if not path.read_bytes().startswith(STOPPED)
    )


def measure(ws: Any, reps: int, log: Callable[[str], None]) -> dict[str, Any]:

    setup(ws)
    ws.build("//halving:sh", "//halving:full")  # the environment, and the trials once
    out: dict[str, Any] = {"alphas": alphas()}
    for search in ("sh", "full"):
        for mode in ("sandboxed", "warm"):
            flags = MODES[mode]
            times = []
            for _ in range(reps):
                ws.bazel("clean", check=True)
                start = time.perf_counter()
                result = ws.build(f"//halving:{search}", flags=("--jobs=2", *flags))
                times.append(time.perf_counter() - start)
            report = json.loads(ws.bin(f"halving/{search}.json").read_text())
            key = f"{search}_{mode}"
            out[key] = {
                "time": median(times),
                "runs": times,
                "processes": result.executed(),
                "trained_epochs": trained_epochs(ws, search),
                "best": report["best"]["name"],
                "best_accuracy": report["best"]["metrics"]["accuracy"],
            }
            log(
                f"halving {key}: {median(times):.1f} s, "
                f"{out[key]['trained_epochs']} epochs trained, best accuracy "
                f"{out[key]['best_accuracy']:.4f} ({out[key]['best']})"
            )
    return out


def render(results: dict[str, Any]) -> list[str]:
    h = results.get("halving")
    if not h:
        return []
    lines = [
        "## Early stopping: successive halving against the full grid",
        "",
        f"The 9 alphas of `//mnist:bzl_halving` ({', '.join(h['alphas'])}) with "
        "`mnist/train_epochs.py` (an SGDClassifier, one `partial_fit` pass per epoch), in "
        "the fixture workspace of part `trials`: `successive_halving(min_epochs = 1, "
        "max_epochs = 9, eta = 3)` against every trial trained 9 epochs. Each build after "
        "`bazel clean`, `--jobs=2`. Epochs trained: checkpoints that are not a stop record.",
        "",
        "| Search | Mode | Wall time | Processes (Bazel's count) | Epochs trained | Best trial | Best accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for search, name in (
        ("sh", "successive halving"),
        ("full", "full grid, 9 epochs each"),
    ):
        for mode in ("sandboxed", "warm"):
            r = h[f"{search}_{mode}"]
            lines.append(
                f"| {name} | {mode} | {r['time']:.1f} s | {r['processes']} | "
                f"{r['trained_epochs']} | `{r['best']}` | {r['best_accuracy']:.4f} |"
            )
    return lines + [""]  # fmt: skip
