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
            or p.name.startswith(
                ("bzl_search.", "bzl_random_search.", "bzl_epochs.", "bzl_halving.")
            )
        )
    }


SEARCHES = (
    "//mnist:bzl_training",
    "//mnist:bzl_eval",
    "//mnist:bzl_search",
    "//mnist:bzl_random_search",
    "//mnist:bzl_epochs",
    "//mnist:bzl_halving",
)


def test_mnist_search_is_complete_cached_and_deterministic(repo: Workspace) -> None:
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: run ./setup.sh first")
    # From nothing: the environments, 114 trainings, 4 plot and HTML steps.
    first = repo.bazel("build", "--jobs=2", *SEARCHES, check=True, timeout=2400)
    # bzl_training + 12 grid trials + 8 random trials + 2 alphas x 6 epochs,
    # and bzl_halving's 9 trials x 9 epochs (21 train, the others are stopped)
    assert first.executed("DatabazelTrain") == 21 + 12 + 81
    # ... bzl_epochs evaluates each of its 12 checkpoints once (learning_curve),
    # bzl_halving each trial at its 3 rungs
    assert first.executed("DatabazelEvaluate") == 21 + 12 + 27
    assert first.executed("DatabazelPlot") == 4
    assert first.executed("DatabazelHtml") == 4  # the HTML reports
    halving = json.loads(repo.bin("mnist/bzl_halving.json").read_text())
    assert sorted(t["epochs"] for t in halving["trials"]) == [1] * 6 + [3, 3, 9]
    assert halving["best"]["epochs"] == 9 and halving["best"]["status"] == "ok"

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
    # models and checkpoints, metrics files, 3 x (7 report files, the
    # manifest and the HTML report), 2 x 3 + 4 plots; bzl_halving's 81
    # checkpoints, 27 metrics files, 9 report files and 2 plots
    assert len(before) == 33 + 33 + 3 * 9 + 2 * 3 + 4 + 81 + 27 + 9 + 2
    repo.bazel("clean", check=True)
    # Rebuilt warm (persistent workers, docs/warm-workers.md): every model,
    # checkpoint, metrics file, report, plot and HTML report is byte-identical
    # to the sandboxed build.
    warm = repo.build(*SEARCHES, flags=("--jobs=2", "--config=warm"))
    runners = {
        (s.get("mnemonic"), s.get("runner"))
        for s in warm.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    }
    assert runners == {("DatabazelTrain", "worker"), ("DatabazelEvaluate", "worker")}
    assert _digests(repo.bin("mnist")) == before


def _lock_versions() -> dict[str, str]:
    """`name==version` pins of requirements_lock.txt."""
    pins = {}
    for line in (REPO / "requirements_lock.txt").read_text().splitlines():
        name, sep, version = line.split(" ")[0].partition("==")
        if sep and not line.startswith("#"):
            pins[name.lower()] = version
    return pins


def test_gates_cards_and_the_served_model(repo: Workspace, tmp_path: Path) -> None:
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: run ./setup.sh first")
    gates = repo.bazel(
        "test",
        "--test_output=all",
        "//mnist:bzl_eval_gate",
        "//mnist:bzl_search_gate",
        "--jobs=2",
    )
    assert gates.returncode == 0, gates.stdout[-3000:] + gates.stderr[-3000:]
    report = json.loads(repo.bin("mnist/bzl_search.json").read_text())
    best = report["best"]
    assert (
        f"PASSED //mnist:bzl_search_gate: //mnist:bzl_search (best trial "
        f"{best['label']}): accuracy = {best['metrics']['accuracy']:.4g}, ok: "
        "at_least 0.96" in gates.stdout
    )

    # Cards of the trained model and of the search's best model.
    repo.build(
        "//mnist:bzl_training",
        "//mnist:bzl_search.best",
        flags=("--output_groups=+cards",),
    )
    pins = _lock_versions()
    for card_path, model_path in (
        ("mnist/bzl_training/model.pkl.card.json", "mnist/bzl_training/model.pkl"),
        ("mnist/bzl_search.best.card.json", "mnist/bzl_search.best.pkl"),
    ):
        card = json.loads(repo.bin(card_path).read_text())
        model = repo.bin(model_path).read_bytes()
        assert card["model"] == {
            "path": model_path,
            "sha256": hashlib.sha256(model).hexdigest(),
        }
        assert card["training_data"] == [
            {
                "path": "mnist/data/mnist.npz",
                "sha256": hashlib.sha256(DATA.read_bytes()).hexdigest(),
            }
        ]
        train = REPO / "mnist" / "train.py"
        assert card["script"] == {
            "path": "mnist/train.py",
            "sha256": hashlib.sha256(train.read_bytes()).hexdigest(),
        }
        for name in ("numpy", "scikit-learn", "scipy"):
            assert card["python_packages"][name] == pins[name]
    assert card["label"] == best["label"]
    assert card["hyperparams"] == best["hyperparams"]
    assert card["evaluation"]["metrics"] == best["metrics"]

    # `bazel run //mnist:predict -- PNG...` classifies test-split digits.
    import numpy as np
    from PIL import Image

    with np.load(DATA) as data:
        images, labels = data["x_test"][:30], data["y_test"][:30]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(image).save(paths[-1])
    run = repo.bazel("run", "//mnist:predict", "--", *map(str, paths))
    assert run.returncode == 0, run.stderr[-3000:]
    printed = [int(line) for line in run.stdout.split()]
    assert len(printed) == 30 and len(set(labels.tolist())) >= 8
    right = sum(p == y for p, y in zip(printed, labels.tolist()))
    # The model's test accuracy is above 0.96.
    assert right >= 28, (printed, labels.tolist())

    missing = repo.bazel("run", "//mnist:predict", "--", "no/such.png")
    assert missing.returncode == 2
    assert "predict.py: error: cannot read the image no/such.png" in missing.stderr


# The commands docs/models-as-dependencies.md shows.
TOUCHED_BY_DATA = (
    'kind("metrics_test|search_report|search_best|py_binary", '
    "rdeps(//mnist/..., //mnist:data/mnist.npz))"
)
MODELS_OF_SCRIPT = 'kind("^model rule$", rdeps(//mnist/..., //mnist:train_epochs.py))'


def test_query_lists_what_a_change_touches(repo: Workspace) -> None:
    touched = repo.bazel("query", TOUCHED_BY_DATA, check=True).stdout.split()
    assert sorted(touched) == [
        "//mnist:bzl_bayes",
        "//mnist:bzl_bayes.best",
        "//mnist:bzl_epochs",
        "//mnist:bzl_epochs.best",
        "//mnist:bzl_eval_gate",
        "//mnist:bzl_halving",
        "//mnist:bzl_halving.best",
        "//mnist:bzl_random_search",
        "//mnist:bzl_random_search.best",
        "//mnist:bzl_search",
        "//mnist:bzl_search.best",
        "//mnist:bzl_search_gate",
        "//mnist:predict",
    ]
    tests = repo.bazel(
        "query", "tests(rdeps(//mnist/..., //mnist:train.py))", check=True
    )
    assert sorted(tests.stdout.split()) == [
        "//mnist:bzl_eval_gate",
        "//mnist:bzl_search_gate",
    ]
    models = repo.bazel("query", MODELS_OF_SCRIPT, check=True).stdout.split()
    assert sorted(models) == [
        "//mnist:bzl_epochs__alpha-0.0001__chain",
        "//mnist:bzl_epochs__alpha-0.01__chain",
    ]
