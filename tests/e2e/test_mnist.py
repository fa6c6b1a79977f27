"""The worked example, built for real: `bazel build //mnist:bzl_search` in this checkout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from bazel_harness import REPO, Workspace

DATA = REPO / "mnist" / "data" / "mnist.npz"


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and (
            p.name == "model.pkl"
            or p.name.endswith(".metrics.json")
            or p.name.startswith("bzl_search.")
        )
    }


def test_mnist_search_is_complete_cached_and_deterministic(repo: Workspace) -> None:
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: run ./setup.sh first")
    first = repo.build(
        "//mnist:bzl_training",
        "//mnist:bzl_eval",
        "//mnist:bzl_search",
        flags=("--jobs=2",),
    )
    assert first.executed("DatabazelTrain") == 13  # bzl_training + 12 trials
    assert first.executed("DatabazelEvaluate") == 13

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

    again = repo.build("//mnist:bzl_search")
    assert again.executed() == 0, again.executed_by_mnemonic()

    before = _digests(repo.bin("mnist"))
    assert (
        len(before) == 13 + 13 + 4
    )  # models, metrics files, report files and manifest
    repo.bazel("clean", check=True)
    repo.build(
        "//mnist:bzl_training",
        "//mnist:bzl_eval",
        "//mnist:bzl_search",
        flags=("--jobs=2",),
    )
    assert _digests(repo.bin("mnist")) == before
