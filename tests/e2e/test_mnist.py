"""The worked example, built for real: `bazel build //mnist:bzl_search //mnist:bzl_random_search` in this checkout."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path

import pytest
from bazel_harness import REPO, REPO_SANDBOXED, Workspace
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
# The searches among them, each with plots = True.
PLOTTED = ("bzl_search", "bzl_random_search", "bzl_epochs", "bzl_halving")


def test_mnist_search_is_complete_cached_and_deterministic(repo: Workspace) -> None:
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: run ./setup.sh first")
    # From nothing: the environments, the trials, the plot and HTML steps.
    first = repo.bazel("build", "--jobs=2", *SEARCHES, check=True, timeout=2400)
    # What runs, from what mnist/BUILD declares (as the reports show it).
    trials = {
        s: json.loads(repo.bin(f"mnist/{s}.json").read_text())["trials"]
        for s in PLOTTED
    }
    # bzl_epochs: one chain of checkpoints per alpha, as long as its most epochs.
    chains: dict[str, int] = {}
    for t in trials["bzl_epochs"]:
        alpha, epochs = t["hyperparams"]["alpha"], int(t["hyperparams"]["epochs"])
        chains[alpha] = max(chains.get(alpha, 0), epochs)
    # bzl_halving: every trial has an action per epoch up to max_epochs (a
    # stopped trial's actions write its stop record), and is evaluated at each rung.
    halving = json.loads(repo.bin("mnist/bzl_halving.json").read_text())
    rungs = sorted({t["epochs"] for t in halving["trials"]})
    assert rungs == [1, 3, 9]  # min_epochs 1, eta 3, max_epochs 9
    assert sorted(t["epochs"] for t in halving["trials"]) == [1] * 6 + [3, 3, 9]
    assert halving["best"]["epochs"] == 9 and halving["best"]["status"] == "ok"
    plain = 1 + len(trials["bzl_search"]) + len(trials["bzl_random_search"])
    trained = plain + sum(chains.values()) + len(trials["bzl_halving"]) * rungs[-1]
    # bzl_epochs evaluates each of its checkpoints once (learning_curve).
    evaluated = plain + sum(chains.values()) + len(trials["bzl_halving"]) * len(rungs)
    assert first.executed("DatabazelTrain") == trained
    assert first.executed("DatabazelEvaluate") == evaluated
    assert first.executed("DatabazelPlot") == len(PLOTTED)
    assert first.executed("DatabazelHtml") == len(PLOTTED)  # the HTML reports

    report = json.loads(repo.bin("mnist/bzl_search.json").read_text())
    assert len(report["trials"]) == 4 * 3  # C x max_iter of mnist/BUILD
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
    # Every model and checkpoint, metrics file and plot, and each search's
    # report files (the same set of them for each search).
    models = [p for p in before if p.endswith(".pkl") and ".best" not in p]
    metrics = [p for p in before if p.endswith(".metrics.json")]
    plots = {p for p in before if p.endswith(".png")}
    assert (len(models), len(metrics)) == (trained, evaluated)
    assert sorted(p.split("/")[-1] for p in plots) == sorted(
        name
        for search in PLOTTED
        for name in os.listdir(repo.bin(f"mnist/{search}.plots"))
    )
    report_files = {
        search: {
            p.removeprefix(search)
            for p in before
            if p.startswith(f"{search}.") and p not in plots
        }
        for search in PLOTTED
    }
    assert len({frozenset(files) for files in report_files.values()}) == 1, report_files
    assert {".json", ".csv", ".md", ".best.pkl"} <= report_files["bzl_search"]
    assert len(before) == trained + evaluated + len(plots) + sum(
        map(len, report_files.values())
    )
    runners = {
        (s.get("mnemonic"), s.get("runner"))
        for s in first.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    }
    assert runners == {("DatabazelTrain", "worker"), ("DatabazelEvaluate", "worker")}
    repo.bazel("clean", check=True)
    # Rebuilt sandboxed (a new process per trial in Bazel's sandbox instead of
    # the default warm workers, docs/warm-workers.md): every model,
    # checkpoint, metrics file, report and plot is byte-identical.
    sandboxed = repo.build(*SEARCHES, flags=("--jobs=2", *REPO_SANDBOXED))
    runners = {
        (s.get("mnemonic"), s.get("runner"))
        for s in sandboxed.spawns
        if s.get("mnemonic") in ("DatabazelTrain", "DatabazelEvaluate")
    }
    assert runners == {
        ("DatabazelTrain", "linux-sandbox"),
        ("DatabazelEvaluate", "linux-sandbox"),
    }
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

    # A PNG that claims 20000x20000 pixels (a few bytes): refused, not decoded.
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(20000, 20000))
    wide = tmp_path / "wide.png"
    wide.write_bytes(png_header(5000, 10))
    for path, size in (
        (huge, "is 20000x20000 pixels, larger than 4096x4096"),
        (wide, "is 5000x10 pixels, larger than 4096x4096"),
    ):
        refused = repo.bazel("run", "//mnist:predict", "--", str(path))
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert refused.stderr.endswith(
            f"predict.py: error: cannot read the image {path}: it {size}; a digit "
            "image should be small: crop or scale it to about 28x28\n"
        ), refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr


def png_header(width: int, height: int) -> bytes:
    """A PNG file's signature, header and end: the size, no pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


# The commands docs/models-as-dependencies.md shows.
TOUCHED_BY_DATA = (
    'kind("metrics_test|search_report|search_best|py_binary", '
    "rdeps(//mnist/..., //mnist:data/mnist.npz))"
)
MODELS_OF_SCRIPT = 'kind("^model rule$", rdeps(//mnist/..., //mnist:train_epochs.py))'


def labels(repo: Workspace, query: str) -> list[str]:
    """What `bazel cquery QUERY` prints, without the configurations, sorted."""
    lines = repo.bazel("cquery", query, check=True).stdout.splitlines()
    found = [re.fullmatch(r"(//\S+) \([0-9a-f]+\)", line) for line in lines]
    assert all(found), lines
    return sorted(match.group(1) for match in found if match)


def test_query_lists_what_a_change_touches(repo: Workspace) -> None:
    touched = labels(repo, TOUCHED_BY_DATA)
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
    assert labels(repo, "tests(rdeps(//mnist/..., //mnist:train.py))") == [
        "//mnist:bzl_eval_gate",
        "//mnist:bzl_search_gate",
    ]
    assert labels(repo, MODELS_OF_SCRIPT) == [
        "//mnist:bzl_epochs__alpha-0.0001__chain",
        "//mnist:bzl_epochs__alpha-0.01__chain",
    ]
