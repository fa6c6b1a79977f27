"""What people look at, for the MNIST searches of this checkout: the HTML reports in
a real browser, what the report step's packages reach, and the MLflow export.

It runs after tests/e2e/test_mnist.py in the same output base (the session's
`repo`), so the searches are built once; run alone, it builds them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import REPO, Workspace, wait_until
from browser import not_blank, open_page
from pngcheck import png_size

DATA = REPO / "mnist" / "data" / "mnist.npz"
PAGES = {
    "bzl_search": [
        "plot-history",
        "plot-parallel",
        "plot-importance",
        "plot-slice",
        "plot-contour",
    ],
    "bzl_epochs": [
        "plot-history",
        "plot-parallel",
        "plot-importance",
        "plot-slice",
        "plot-contour",
        "plot-curves",
    ],
    # One trial reaches the last rung: its views need two; the curves show all.
    "bzl_halving": ["plot-history", "plot-parallel", "plot-slice", "plot-curves"],
}
SCREENSHOT = REPO / "docs" / "reports-bzl_search.png"
MLFLOW_VENV = REPO / ".local" / "mlflow-venv"


@pytest.fixture(scope="module")
def built(repo: Workspace) -> Workspace:
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: run ./setup.sh first")
    targets = [f"//mnist:{name}" for name in PAGES]
    # A no-op after test_mnist.py; run alone, every search is built here.
    repo.bazel(
        "build", "--jobs=2", *targets, "//mnist:bzl_bayes", check=True, timeout=2400
    )
    return repo


@pytest.mark.parametrize("search", sorted(PAGES))
def test_the_html_report_in_a_browser(
    built: Workspace, search: str, tmp_path: Path
) -> None:
    page = open_page(built.bin(f"mnist/{search}.html"), tmp_path / f"{search}.png")
    assert page.alert is None
    assert page.errors == []
    # Every view drew: each plotly div holds plotly's SVG.
    assert sorted(page.plots) == sorted(PAGES[search])
    assert all(count >= 1 for count in page.plots.values()), page.plots
    report = json.loads(built.bin(f"mnist/{search}.json").read_text())
    assert report["best"]["name"] in page.texts
    assert png_size(page.screenshot)[0] == 1280
    assert not_blank(page.screenshot) > 0.05
    if search == "bzl_search":
        # The picture in docs/reports.md is one this test took.
        assert png_size(SCREENSHOT)[0] == 1280


def test_no_trial_has_plotly_or_optuna_among_its_inputs(built: Workspace) -> None:
    actions = built.action_inputs(
        "deps(//mnist:bzl_search + //mnist:bzl_epochs + //mnist:bzl_halving + "
        "//mnist:bzl_bayes)"
    )
    seen = {mnemonic for mnemonic, _, _ in actions}
    assert {"DatabazelTrain", "DatabazelEvaluate", "DatabazelHtml"} <= seen

    def has(inputs: set[str], package: str) -> bool:
        return any(f"/site-packages/{package}/" in p for p in inputs)

    for mnemonic, output, inputs in actions:
        if mnemonic == "DatabazelHtml":
            assert has(inputs, "plotly") and has(inputs, "optuna"), output
            assert not has(inputs, "sklearn") and not has(inputs, "matplotlib")
        else:
            assert not has(inputs, "plotly"), (mnemonic, output)
            if mnemonic != "DatabazelSuggest":  # bzl_bayes's TPE rounds
                assert not has(inputs, "optuna"), (mnemonic, output)


def test_against_another_builds_report(built: Workspace, tmp_path: Path) -> None:
    report = json.loads(built.bin("mnist/bzl_search.json").read_text())
    # "main": the best trial scored less, one trial more, one trial less.
    main = json.loads(json.dumps(report))
    best, dropped = main["trials"][0], main["trials"][-1]
    best["metrics"]["accuracy"] -= 0.01
    main["trials"].remove(dropped)
    main["trials"].append(dict(best, name="bzl_search__C-100__max_iter-50"))
    main["best"] = best
    other = tmp_path / "main.json"
    other.write_text(json.dumps(main))
    run = built.bazel(
        "run", "//mnist:bzl_search", "--", "--against", str(other), check=True
    )
    lines = run.stdout.splitlines()
    assert lines[0] == (f"//mnist:bzl_search against {other}: ranked by accuracy (max)")
    assert f"Best trial: {best['name']}, as before." in lines
    assert (
        "12 trials (12 before): 1 added, 1 removed, 1 changed, 10 unchanged." in lines
    )
    rows = [line.split() for line in lines if line.startswith("bzl_search__")]
    assert [r[:3] for r in rows] == [
        [dropped["name"], "added", "accuracy"],
        ["bzl_search__C-100__max_iter-50", "removed", "accuracy"],
        [best["name"], "changed", "accuracy"],
    ]
    assert rows[2][-1] == "+0.01"
    missing = built.bazel("run", "//mnist:bzl_search", "--", "--against", "no.json")
    assert missing.returncode == 2
    assert "databazel: error: //mnist:bzl_search: cannot read the report" in (
        missing.stderr
    )


# ---------------------------------------------------------------------------
# MLflow


def read_back(uri: str, experiment: str) -> dict:
    """Every run of `experiment`, read with MlflowClient (the test server's MLflow)."""
    script = r"""
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
experiment = client.get_experiment_by_name(sys.argv[2])
runs = []
for run in client.search_runs([experiment.experiment_id], max_results=10000):
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in run.data.metrics
    }
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    runs.append({"id": run.info.run_id, "name": run.info.run_name,
                 "status": run.info.status, "params": run.data.params,
                 "metrics": run.data.metrics, "tags": run.data.tags,
                 "history": history, "artifacts": sorted(artifacts)})
print(json.dumps(runs))
"""
    out = subprocess.run(
        [str(MLFLOW_VENV / "bin" / "python"), "-c", script, uri, experiment],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return {
        run["tags"].get("databazel.target", "parent"): run for run in json.loads(out)
    }


def export(repo: Workspace, search: str, uri: str, *options: str) -> str:
    run = repo.bazel(
        "run",
        f"//mnist:{search}.mlflow",
        "--",
        "--tracking-uri",
        uri,
        *options,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (repo.root / "mlruns").exists(), "artifacts went to the workspace"
    return run.stdout.strip()


def check_runs(repo: Workspace, search: str, runs: dict) -> None:
    """The runs are the report's: one per trial, their params, metrics, steps, statuses, tags."""
    report = json.loads(repo.bin(f"mnist/{search}.json").read_text())
    parent = runs.pop("parent")
    assert parent["tags"]["databazel.search"] == f"//mnist:{search}"
    assert parent["tags"]["databazel.best"] == report["best"]["name"]
    assert parent["metrics"] == report["best"]["metrics"]
    assert f"{search}.json" in parent["artifacts"]
    assert f"{search}.html" in parent["artifacts"]
    assert sorted(runs) == sorted(t["label"] for t in report["trials"])
    status = {"ok": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
    for trial in report["trials"]:
        run = runs[trial["label"]]
        assert run["name"] == trial["name"]
        assert run["status"] == status[trial["status"]]
        assert run["params"] == trial["hyperparams"]
        assert run["metrics"] == trial["metrics"]
        assert run["tags"]["mlflow.parentRunId"] == parent["id"]
        assert run["tags"]["databazel.status"] == trial["status"]
        model = repo.bin(trial["model"]).read_bytes()
        assert (
            run["tags"]["databazel.model_sha256"] == hashlib.sha256(model).hexdigest()
        )
        assert "lineage_card.json" in run["artifacts"]
        # As JSON gives them back: [step, value] lists.
        curve = [
            [p["epoch"], p["metrics"]["accuracy"]] for p in trial["learning_curve"]
        ]
        steps = curve or [[0, trial["metrics"]["accuracy"]]]
        assert run["history"]["accuracy"] == steps


def test_mlflow_export_to_sqlite_logs_nothing_twice(
    built: Workspace, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    artifacts = tmp_path / "artifacts"
    first = export(built, "bzl_halving", uri, "--artifact-location", str(artifacts))
    assert first.startswith(
        f'logged //mnist:bzl_halving to {uri}, experiment "//mnist:bzl_halving"'
    )
    assert first.endswith("with 9 trial runs (9 runs logged now)")
    runs = read_back(uri, "//mnist:bzl_halving")
    check_runs(built, "bzl_halving", dict(runs))
    statuses = sorted(run["status"] for run in runs.values())
    assert statuses == ["FINISHED", "FINISHED"] + ["KILLED"] * 8
    # Every run's lineage card is a file under --artifact-location, none elsewhere.
    cards = [run for run in runs.values() if "lineage_card.json" in run["artifacts"]]
    assert len(cards) >= 9
    assert len(list(artifacts.glob("*/artifacts/lineage_card.json"))) == len(cards)

    again = export(built, "bzl_halving", uri)
    assert again.endswith("with 9 trial runs; nothing logged"), again
    assert read_back(uri, "//mnist:bzl_halving") == runs


@contextlib.contextmanager
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on a port of the loopback interface that it picks itself."""
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                str(MLFLOW_VENV / "bin" / "python"),
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{tmp_path}/server.db",
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        pattern = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:[1-9][0-9]*)")

        def address() -> str | None:
            found = pattern.search(log.read_text(errors="replace"))
            assert server.poll() is None, log.read_text()[-3000:]
            return found.group(1) if found else None

        wait_until(lambda: address() is not None, 180, "mlflow server to listen")
        yield str(address())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_mlflow_export_to_a_tracking_server(built: Workspace, tmp_path: Path) -> None:
    if not (MLFLOW_VENV / "bin" / "python").exists():
        pytest.fail(f"{MLFLOW_VENV} is missing: run ./setup.sh first")
    with mlflow_server(tmp_path) as uri:
        first = export(built, "bzl_epochs", uri)
        assert first.endswith("with 6 trial runs (6 runs logged now)"), first
        runs = read_back(uri, "//mnist:bzl_epochs")
        check_runs(built, "bzl_epochs", dict(runs))
        # Learning curves as steps: epochs 1..N of each trial.
        for run in runs.values():
            if "databazel.target" in run["tags"]:
                epochs = int(run["params"]["epochs"])
                assert [s for s, _ in run["history"]["accuracy"]] == list(
                    range(1, epochs + 1)
                )
        again = export(built, "bzl_epochs", uri)
        assert again.endswith("with 6 trial runs; nothing logged"), again
        assert read_back(uri, "//mnist:bzl_epochs") == runs
