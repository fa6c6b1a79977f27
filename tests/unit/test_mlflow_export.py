"""Tests for databazel/private/mlflow_export.py: what is logged, checked before MLflow.

The export against real tracking stores (SQLite, a loopback `mlflow server`)
is tested in tests/e2e/test_mlflow.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow_export
import pytest
from contract import RunnerError


def trial(
    rank: int, number: int, name: str, status: str, **extra: Any
) -> dict[str, Any]:
    return {
        "rank": rank,
        "number": number,
        "name": name,
        "label": f"//pkg:{name}",
        "hyperparams": {"alpha": str(number), "fixed": "f"},
        "metrics": {},
        "model": f"pkg/{name}/model.pkl",
        "status": status,
        "failure": None,
        "learning_curve": [],
        **extra,
    }


def curve(*points: float) -> list[dict[str, Any]]:
    return [
        {"epoch": epoch, "metrics": {"accuracy": a, "loss": 1 - a}}
        for epoch, a in enumerate(points, start=1)
    ]


REPORT = {
    "search": "//pkg:s",
    "metric": "accuracy",
    "mode": "max",
    "hyperparam_names": ["alpha"],
    "failed": 1,
    "stopped": 1,
    "trials": [
        trial(
            1,
            1,
            "s__alpha-1",
            "ok",
            metrics={"accuracy": 0.9, "loss": 1 - 0.9},
            learning_curve=curve(0.5, 0.9),
            rung=1,
            epochs=2,
        ),
        trial(
            2,
            0,
            "s__alpha-0",
            "stopped",
            metrics={"accuracy": 0.4, "loss": 1 - 0.4},
            learning_curve=curve(0.4),
            rung=0,
            epochs=1,
        ),
        trial(
            3,
            2,
            "s__alpha-2",
            "failed",
            failure={
                "status": "failed",
                "stage": "train",
                "target": "//pkg:s__alpha-2",
                "exit_code": 3,
                "signal": None,
                "error": "FATAL: boom\nmore",
                "stderr_tail": "",
            },
        ),
    ],
}
REPORT["best"] = REPORT["trials"][0]


def manifest(tmp_path: Path) -> dict[str, Any]:
    cards = {}
    for t in REPORT["trials"]:
        path = tmp_path / f"{t['name']}__eval.card.json"
        card = {
            "model": {"sha256": "ab" * 32},
            "evaluation": {"label": t["label"] + "__eval"},
        }
        path.write_text(json.dumps(card))
        cards[t["label"]] = str(path)
    best = tmp_path / "s.best.card.json"
    best.write_text("{}")
    return {
        "search": "//pkg:s",
        "report": str(tmp_path / "s.json"),
        "best_card": str(best),
        "html": None,
        "cards": cards,
    }


def test_one_run_per_trial_in_the_search_order(tmp_path: Path) -> None:
    export = mlflow_export.plan(manifest(tmp_path), json.dumps(REPORT))
    assert [(r.name, r.status) for r in export.children] == [
        ("s__alpha-0", "KILLED"),
        ("s__alpha-1", "FINISHED"),
        ("s__alpha-2", "FAILED"),
    ]
    ok = export.children[1]
    assert ok.key == "//pkg:s__alpha-1"
    assert ok.params == {"alpha": "1", "fixed": "f"}
    # Each epoch a step; the trial's metrics are its last epoch's.
    assert ok.metrics == {
        "accuracy": [(1, 0.5), (2, 0.9)],
        "loss": [(1, 0.5), (2, 1 - 0.9)],
    }
    assert ok.tags == {
        "databazel.search": "//pkg:s",
        "databazel.target": "//pkg:s__alpha-1",
        "databazel.evaluation": "//pkg:s__alpha-1__eval",
        "databazel.status": "ok",
        "databazel.rank": "1",
        "databazel.number": "1",
        "databazel.rung": "1",
        "databazel.epochs": "2",
        "databazel.model": "pkg/s__alpha-1/model.pkl",
        "databazel.model_sha256": "ab" * 32,
    }
    assert set(ok.texts) == {"lineage_card.json"}
    failed = export.children[2]
    assert failed.metrics == {}
    assert failed.tags["databazel.failure"] == "train of //pkg:s__alpha-2: FATAL: boom"


def test_the_parent_run_is_keyed_by_the_report(tmp_path: Path) -> None:
    text = json.dumps(REPORT)
    export = mlflow_export.plan(manifest(tmp_path), text)
    parent = export.parent
    assert parent.name == "s"
    assert parent.key == export.report_sha256 == parent.tags["databazel.report_sha256"]
    assert parent.metrics == {"accuracy": [(0, 0.9)], "loss": [(0, 1 - 0.9)]}
    assert parent.tags["databazel.best"] == "s__alpha-1"
    assert set(parent.texts) == {"s.json", "lineage_card.json"}
    changed = json.dumps(dict(REPORT, failed=2))
    assert mlflow_export.plan(manifest(tmp_path), changed).report_sha256 != parent.key


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t["metrics"].update({"f1@5": 1.0}),
            'trial s__alpha-1 has the metric name "f1@5", which MLflow cannot hold',
        ),
        (
            lambda t: t["hyperparams"].update({"alpha": "x" * 6001}),
            "trial s__alpha-1 has hyperparameter alpha of 6001 characters; MLflow "
            "holds at most 6000",
        ),
    ],
)
def test_what_mlflow_would_refuse_fails_before_anything_is_logged(
    tmp_path: Path, edit: Any, message: str
) -> None:
    report = json.loads(json.dumps(REPORT))
    edit(report["trials"][0])
    with pytest.raises(RunnerError, match=message.replace("(", r"\(")):
        mlflow_export.plan(manifest(tmp_path), json.dumps(report))


def test_a_trial_without_a_card_is_an_error(tmp_path: Path) -> None:
    m = manifest(tmp_path)
    del m["cards"]["//pkg:s__alpha-2"]
    with pytest.raises(RunnerError, match="no lineage card of //pkg:s__alpha-2"):
        mlflow_export.plan(m, json.dumps(REPORT))


def test_without_a_tracking_uri_it_says_what_to_give(
    capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as exit_:
        mlflow_export.main(["--target", "//pkg:s.mlflow", "--manifest", "m.json"])
    assert exit_.value.code == 2
    assert (
        "give --tracking-uri URI (or set MLFLOW_TRACKING_URI)"
        in capsys.readouterr().err
    )


def test_without_mlflow_it_says_what_to_add(tmp_path: Path, capsys) -> None:
    m = manifest(tmp_path)
    Path(m["report"]).write_text(json.dumps(REPORT))
    path = tmp_path / "m.json"
    path.write_text(json.dumps(m))
    code = mlflow_export.main(
        ["--target", "//pkg:s.mlflow", "--manifest", str(path)]
        + ["--tracking-uri", f"sqlite:///{tmp_path}/x.db"]
    )
    assert code == 2  # .venv has no mlflow
    err = capsys.readouterr().err
    assert err.startswith(
        "databazel: error: //pkg:s.mlflow: cannot import MLflow's client"
    )
    assert '`mlflow_deps = ["@<env>//:mlflow-skinny"]`' in err
    assert not (tmp_path / "x.db").exists()
