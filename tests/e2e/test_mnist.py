"""The worked example, built for real: `bazel build //mnist:bzl_search //mnist:bzl_random_search` in this checkout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from bazel_harness import REPO, Workspace
from pngcheck import png_size

DATA = REPO / "mnist" / "data" / "mnist.npz"


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and ".runfiles" not in p.relative_to(root).as_posix()
        and (
            p.name == "model.pkl"
            or (p.name.startswith("model.epoch-") and p.name.endswith(".pkl"))
            or p.name.endswith((".metrics.json", ".png"))
            or p.name.startswith(("bzl_search.", "bzl_random_search.", "bzl_epochs."))
        )
    }


SEARCHES = (
    "//mnist:bzl_training",
    "//mnist:bzl_eval",
    "//mnist:bzl_search",
    "//mnist:bzl_random_search",
    "//mnist:bzl_epochs",
)


def test_mnist_search_is_complete_cached_and_deterministic(repo: Workspace) -> None:
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: run ./setup.sh first")
    first = repo.build(*SEARCHES, flags=("--jobs=2",))
    # bzl_training + 12 grid trials + 8 random trials + 2 alphas x 6 epochs
    assert first.executed("DatabazelTrain") == 21 + 12
    # ... and bzl_epochs evaluates each of its 12 checkpoints once (learning_curve)
    assert first.executed("DatabazelEvaluate") == 21 + 12
    assert first.executed("DatabazelPlot") == 3

    report = json.loads(repo.bin("mnist/bzl_search.json").read_text())
    assert len(report["trials"]) == 12
    assert (
        len({tuple(sorted(t["hyperparams"].items())) for t in report["trials"]}) == 12
    )
    best = report["best"]
    assert best == report["trials"][0]
    assert all(
        best["metrics"]["accuracy"] >= t["metrics"]["accuracy"]
        for t in report["trials"]
    )
    assert (
        best["metrics"]["accuracy"] > 0.9
    )  # logistic regression on handwritten digits
    metrics = json.loads(repo.bin("mnist/bzl_eval.metrics.json").read_text())
    assert set(metrics) >= {"accuracy", "macro_f1", "log_loss"}
    assert repo.bin("mnist/bzl_training/model.pkl").stat().st_size > 0

    # The best model is the winner's, byte for byte; every plot is a valid image.
    for search in ("bzl_search", "bzl_random_search"):
        report = json.loads(repo.bin(f"mnist/{search}.json").read_text())
        assert (
            repo.bin(f"mnist/{search}.best.pkl").read_bytes()
            == repo.bin(report["best"]["model"]).read_bytes()
        )
        assert (
            json.loads(repo.bin(f"mnist/{search}.best_hyperparams.json").read_text())
            == report["best"]["hyperparams"]
        )
        plots = sorted(p.name for p in repo.bin(f"mnist/{search}.plots").iterdir())
        assert plots == ["C.png", "C__max_iter.png", "max_iter.png"]
        for name in plots:
            assert png_size(repo.bin(f"mnist/{search}.plots/{name}")) == (640, 480)
            assert (
                f"]({search}.plots/{name})"
                in repo.bin(f"mnist/{search}.md").read_text()
            )
    epochs = json.loads(repo.bin("mnist/bzl_epochs.json").read_text())
    assert len(epochs["trials"]) == 6
    for trial in epochs["trials"]:
        n = int(trial["hyperparams"]["epochs"])
        assert [p["epoch"] for p in trial["learning_curve"]] == list(range(1, n + 1))
        assert trial["learning_curve"][-1]["metrics"] == trial["metrics"]
        assert trial["metrics"]["accuracy"] > 0.8
    plots = sorted(p.name for p in repo.bin("mnist/bzl_epochs.plots").iterdir())
    assert plots == [
        "alpha.png",
        "alpha__epochs.png",
        "epochs.png",
        "learning_curve.png",
    ]
    assert png_size(repo.bin("mnist/bzl_epochs.plots/learning_curve.png")) == (640, 480)
    chain = repo.bin("mnist/bzl_epochs__alpha-0.01__chain")
    checkpoints = [(chain / f"model.epoch-{k}.pkl").read_bytes() for k in range(1, 7)]
    assert len(set(checkpoints)) == 6  # every epoch changes the model
    random_report = json.loads(repo.bin("mnist/bzl_random_search.json").read_text())
    assert len(random_report["trials"]) == 8

    # `bazel run` on a search prints its leaderboard.
    run = repo.bazel("run", "//mnist:bzl_random_search", check=True)
    assert run.stdout.startswith(
        "//mnist:bzl_random_search: 8 trials ranked by accuracy (max)\n"
    )
    assert random_report["best"]["name"] in run.stdout.splitlines()[4]

    again = repo.build(*SEARCHES)
    assert again.executed() == 0, again.executed_by_mnemonic()

    before = _digests(repo.bin("mnist"))
    # models and checkpoints, metrics files, 3 x (7 report files and the
    # manifest), 2 x 3 + 4 plots
    assert len(before) == 33 + 33 + 3 * 8 + 2 * 3 + 4
    repo.bazel("clean", check=True)
    # Rebuilt warm (persistent workers, docs/warm-workers.md): every model,
    # checkpoint, metrics file, report and plot is byte-identical to the
    # sandboxed build.
    warm = repo.build(*SEARCHES, flags=("--jobs=2", "--config=warm"))
    runners = {
        (s.get("mnemonic"), s.get("runner"))
        for s in warm.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    }
    assert runners == {("DatabazelTrain", "worker"), ("DatabazelEvaluate", "worker")}
    assert _digests(repo.bin("mnist")) == before
