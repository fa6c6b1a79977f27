"""Tests for databazel/private/report.py."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import report

REPORT = Path(report.__file__).resolve()
TARGET = "//mnist:search"


def make_search(
    root: Path,
    trials: list[tuple[dict[str, str], dict[str, Any] | str]],
    names: list[str] | None = None,
) -> Path:
    """Write one metrics file per trial and a manifest; return the manifest path.

    A trial's metrics may be a dict (written as JSON) or raw text.
    """
    names = ["C", "max_iter"] if names is None else names
    entries = []
    for index, (hyperparams, metrics) in enumerate(trials):
        name = "bzl_search__" + "__".join(f"{k}-{v}" for k, v in hyperparams.items())
        name = name if name != "bzl_search__" else f"bzl_search__{index}"
        metrics_path = root / "out" / f"{index}.metrics.json"
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        metrics_path.write_text(text, encoding="utf-8")
        entries.append(
            {
                "name": name,
                "label": f"//mnist:{name}",
                "hyperparams": hyperparams,
                "metrics": str(metrics_path),
                "model": f"mnist/{name}/model.pkl",
            }
        )
    manifest = root / "manifest.json"
    manifest.write_text(
        json.dumps({"hyperparam_names": names, "trials": entries}), "utf-8"
    )
    return manifest


def run_report(
    root: Path, manifest: Path, metric: str, mode: str, prefix: str = "r"
) -> tuple[int, dict[str, Path]]:
    outputs = {
        ext: root / "reports" / f"{prefix}.{ext}" for ext in ("json", "csv", "md")
    }
    code = report.main(
        [
            "--target",
            TARGET,
            "--manifest",
            str(manifest),
            "--metric",
            metric,
            "--mode",
            mode,
            "--json-output",
            str(outputs["json"]),
            "--csv-output",
            str(outputs["csv"]),
            "--markdown-output",
            str(outputs["md"]),
        ]
    )
    return code, outputs


def grid() -> list[tuple[dict[str, str], dict[str, Any] | str]]:
    return [
        ({"C": "0.1", "max_iter": "100"}, {"accuracy": 0.91, "loss": 0.30}),
        ({"C": "1.0", "max_iter": "100"}, {"accuracy": 0.97, "loss": 0.12}),
        ({"C": "10", "max_iter": "100"}, {"accuracy": 0.94, "loss": 0.21}),
    ]


def ranked_names(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [t["name"] for t in data["trials"]]


def test_max_mode_ranks_highest_first(tmp_path: Path, capsys) -> None:
    manifest = make_search(tmp_path, grid())
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 0
    assert capsys.readouterr() == ("", "")
    data = json.loads(out["json"].read_text(encoding="utf-8"))
    assert data["search"] == TARGET
    assert (data["metric"], data["mode"]) == ("accuracy", "max")
    assert [(t["rank"], t["hyperparams"]["C"]) for t in data["trials"]] == [
        (1, "1.0"),
        (2, "10"),
        (3, "0.1"),
    ]
    assert data["best"] == data["trials"][0]
    assert data["best"] == {
        "rank": 1,
        "name": "bzl_search__C-1.0__max_iter-100",
        "label": "//mnist:bzl_search__C-1.0__max_iter-100",
        "hyperparams": {"C": "1.0", "max_iter": "100"},
        "metrics": {"accuracy": 0.97, "loss": 0.12},
        "model": "mnist/bzl_search__C-1.0__max_iter-100/model.pkl",
    }


def test_min_mode_ranks_lowest_first(tmp_path: Path) -> None:
    manifest = make_search(tmp_path, grid())
    code, out = run_report(tmp_path, manifest, "loss", "min")
    assert code == 0
    data = json.loads(out["json"].read_text(encoding="utf-8"))
    assert [t["metrics"]["loss"] for t in data["trials"]] == [0.12, 0.21, 0.30]
    assert data["best"]["hyperparams"]["C"] == "1.0"


@pytest.mark.parametrize("mode", ["max", "min"])
def test_ties_keep_manifest_order(tmp_path: Path, mode: str) -> None:
    trials: list[tuple[dict[str, str], dict[str, Any] | str]] = [
        ({"C": "a", "max_iter": "1"}, {"acc": 0.5}),
        ({"C": "b", "max_iter": "1"}, {"acc": 0.8}),
        ({"C": "c", "max_iter": "1"}, {"acc": 0.5}),
        ({"C": "d", "max_iter": "1"}, {"acc": 0.8}),
        ({"C": "e", "max_iter": "1"}, {"acc": 1}),
    ]
    manifest = make_search(tmp_path, trials)
    code, out = run_report(tmp_path, manifest, "acc", mode)
    assert code == 0
    order = [n.split("__")[1] for n in ranked_names(out["json"])]
    expected = (
        ["C-e", "C-b", "C-d", "C-a", "C-c"]
        if mode == "max"
        else [
            "C-a",
            "C-c",
            "C-b",
            "C-d",
            "C-e",
        ]
    )
    assert order == expected


def test_csv_header_and_rows(tmp_path: Path) -> None:
    trials = grid()
    trials[0] = (
        {"C": "0.1", "max_iter": "100"},
        {"accuracy": 0.91, "loss": 0.3, "n": 10},
    )
    manifest = make_search(tmp_path, trials)
    code, out = run_report(tmp_path, manifest, "loss", "min")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out["csv"].read_text(encoding="utf-8"))))
    assert rows == [
        ["rank", "name", "C", "max_iter", "loss", "accuracy", "n"],
        ["1", "bzl_search__C-1.0__max_iter-100", "1.0", "100", "0.12", "0.97", ""],
        ["2", "bzl_search__C-10__max_iter-100", "10", "100", "0.21", "0.94", ""],
        ["3", "bzl_search__C-0.1__max_iter-100", "0.1", "100", "0.3", "0.91", "10"],
    ]


def test_extra_fixed_hyperparams_come_after_grid_columns(tmp_path: Path) -> None:
    trials: list[tuple[dict[str, str], dict[str, Any] | str]] = [
        ({"solver": "lbfgs", "C": "0.1", "penalty": "l2"}, {"acc": 0.5}),
        ({"solver": "lbfgs", "C": "1", "penalty": "l2"}, {"acc": 0.6}),
    ]
    manifest = make_search(tmp_path, trials, names=["C"])
    code, out = run_report(tmp_path, manifest, "acc", "max")
    assert code == 0
    header = out["csv"].read_text(encoding="utf-8").splitlines()[0]
    assert header == "rank,name,C,penalty,solver,acc"
    second = out["csv"].read_text(encoding="utf-8").splitlines()[1]
    assert second.endswith(",1,l2,lbfgs,0.6")


def test_markdown_leaderboard(tmp_path: Path) -> None:
    trials = grid()
    trials[1] = ({"C": "1|0", "max_iter": "100"}, {"accuracy": 0.97, "loss": 0.12})
    manifest = make_search(tmp_path, trials)
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 0
    text = out["md"].read_text(encoding="utf-8")
    lines = text.splitlines()
    assert TARGET in lines[0]
    summary = next(line for line in lines if "Best trial" in line)
    assert "accuracy" in summary and "max" in summary
    assert "bzl_search__C-1\\|0__max_iter-100" in summary
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| rank | name | C | max_iter | accuracy | loss |"
    assert set(table[1].replace("|", "").split()) == {"---"}
    assert (
        table[2]
        == "| 1 | bzl_search__C-1\\|0__max_iter-100 | 1\\|0 | 100 | 0.97 | 0.12 |"
    )
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 1", "| 2", "| 3"]
    assert [row.split(" | ")[4] for row in table[2:]] == ["0.97", "0.94", "0.91"]


def test_output_is_byte_identical_across_runs(tmp_path: Path) -> None:
    manifest = make_search(tmp_path, grid())
    code1, first = run_report(tmp_path, manifest, "accuracy", "max", prefix="a")
    # The second run goes through the command line, as Bazel runs it.
    second = {ext: tmp_path / "reports" / f"b.{ext}" for ext in ("json", "csv", "md")}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPORT),
            "--target",
            TARGET,
            "--manifest",
            str(manifest),
            "--metric",
            "accuracy",
            "--mode",
            "max",
            "--json-output",
            str(second["json"]),
            "--csv-output",
            str(second["csv"]),
            "--markdown-output",
            str(second["md"]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (code1, proc.returncode, proc.stdout, proc.stderr) == (0, 0, "", "")
    for ext in ("json", "csv", "md"):
        assert first[ext].read_bytes() == second[ext].read_bytes()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "a.csv",
        "a.json",
        "a.md",
        "b.csv",
        "b.json",
        "b.md",
    ]


def assert_failed(code: int, out: dict[str, Path], capsys, *fragments: str) -> None:
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"databazel: error: {TARGET}: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    assert not any(path.exists() for path in out.values())


def test_trial_missing_the_metric(tmp_path: Path, capsys) -> None:
    trials = grid()
    trials[2] = ({"C": "10", "max_iter": "100"}, {"acc": 0.94, "loss": 0.21})
    manifest = make_search(tmp_path, trials)
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert_failed(
        code,
        out,
        capsys,
        'trial bzl_search__C-10__max_iter-100 has no metric "accuracy"; '
        "its metrics are: acc, loss",
    )


def test_invalid_mode(tmp_path: Path, capsys) -> None:
    manifest = make_search(tmp_path, grid())
    code, out = run_report(tmp_path, manifest, "accuracy", "maximum")
    assert_failed(code, out, capsys, 'mode must be "max" or "min", got "maximum"')


def test_empty_search(tmp_path: Path, capsys) -> None:
    manifest = make_search(tmp_path, [])
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert_failed(code, out, capsys, "lists no trials")


def test_unreadable_metrics_file(tmp_path: Path, capsys) -> None:
    manifest = make_search(tmp_path, grid())
    (tmp_path / "out" / "1.metrics.json").unlink()
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert_failed(
        code,
        out,
        capsys,
        "cannot read the metrics of trial bzl_search__C-1.0__max_iter-100",
        "No such file or directory",
    )


def test_malformed_metrics_file(tmp_path: Path, capsys) -> None:
    trials = grid()
    trials[0] = ({"C": "0.1", "max_iter": "100"}, '{"accuracy": NaN}')
    manifest = make_search(tmp_path, trials)
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert_failed(
        code,
        out,
        capsys,
        "cannot read the metrics of trial bzl_search__C-0.1__max_iter-100",
        'metric "accuracy" is NaN',
    )


def test_malformed_manifest(tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"hyperparam_names": [], "trials": [{"name": 3}]}', "utf-8")
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert_failed(code, out, capsys, "trial #0 needs string fields")
