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

# `python3 tool.py report ARGS`, as the actions start it.
REPORT = (str(Path(report.__file__).resolve().parent / "tool.py"), "report")
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
        model_path = root / "out" / f"{index}.model.pkl"
        model_path.write_bytes(b"model of " + name.encode() + bytes(range(256)))
        entries.append(
            {
                "name": name,
                "label": f"//mnist:{name}",
                "hyperparams": hyperparams,
                "metrics": str(metrics_path),
                "model": f"mnist/{name}/model.pkl",
                "model_path": str(model_path),
            }
        )
    manifest = root / "manifest.json"
    manifest.write_text(
        json.dumps({"hyperparam_names": names, "trials": entries}), "utf-8"
    )
    return manifest


OUTPUTS = {
    "json": "--json-output",
    "csv": "--csv-output",
    "md": "--markdown-output",
    "txt": "--leaderboard-output",
    "best.pkl": "--best-model-output",
    "best_hyperparams.json": "--best-hyperparams-output",
}


def report_args(
    root: Path, manifest: Path, metric: str, mode: str, prefix: str
) -> tuple[list[str], dict[str, Path]]:
    outputs = {ext: root / "reports" / f"{prefix}.{ext}" for ext in OUTPUTS}
    args = ["--target", TARGET, "--manifest", str(manifest)]
    args += ["--metric", metric, "--mode", mode]
    for ext, flag in OUTPUTS.items():
        args += [flag, str(outputs[ext])]
    return args, outputs


def run_report(
    root: Path,
    manifest: Path,
    metric: str,
    mode: str,
    prefix: str = "r",
    extra: tuple[str, ...] = (),
) -> tuple[int, dict[str, Path]]:
    args, outputs = report_args(root, manifest, metric, mode, prefix)
    return report.main(args + list(extra)), outputs


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
    assert data["hyperparam_names"] == ["C", "max_iter"]
    assert data["best"] == {
        "rank": 1,
        "number": 1,  # second in the search's order
        "name": "bzl_search__C-1.0__max_iter-100",
        "label": "//mnist:bzl_search__C-1.0__max_iter-100",
        "hyperparams": {"C": "1.0", "max_iter": "100"},
        "metrics": {"accuracy": 0.97, "loss": 0.12},
        "model": "mnist/bzl_search__C-1.0__max_iter-100/model.pkl",
        "status": "ok",
        "failure": None,
        "learning_curve": [],
    }
    assert data["failed"] == 0


def test_learning_curves_are_in_the_json_report(tmp_path: Path) -> None:
    manifest = make_search(tmp_path, grid())
    data = json.loads(manifest.read_text())
    curve = []
    for epoch, accuracy in ((1, 0.5), (2, 0.7)):
        path = tmp_path / f"epoch-{epoch}.metrics.json"
        path.write_text(json.dumps({"accuracy": accuracy}))
        curve.append({"epoch": epoch, "metrics": str(path)})
    failed = tmp_path / "epoch-3.metrics.json"
    failed.write_text(
        json.dumps(
            {
                "status": "failed",
                "stage": "evaluate",
                "target": "//p:e",
                "exit_code": 1,
                "signal": None,
                "error": "boom",
                "stderr_tail": "",
            }
        )
    )
    curve.append({"epoch": 3, "metrics": str(failed)})
    data["trials"][0]["learning_curve"] = curve
    manifest.write_text(json.dumps(data))
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 0
    trials = json.loads(out["json"].read_text())["trials"]
    first = next(t for t in trials if t["hyperparams"]["C"] == "0.1")
    assert first["learning_curve"] == [
        {"epoch": 1, "metrics": {"accuracy": 0.5}},
        {"epoch": 2, "metrics": {"accuracy": 0.7}},
        {"epoch": 3, "metrics": {}},
    ]
    data["trials"][1]["learning_curve"] = [{"epoch": "1", "metrics": str(failed)}]
    manifest.write_text(json.dumps(data))
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 1


def test_early_stopped_trials_rank_after_those_that_reached_the_last_rung(
    tmp_path: Path,
) -> None:
    # Three trials of successive halving, rungs at 1 and 3 epochs: the first
    # was stopped at the first rung although its metric there is the best of
    # all the report sees; the others reached the last rung.
    manifest = make_search(tmp_path, grid())
    data = json.loads(manifest.read_text())
    stop = tmp_path / "stop.json"
    stop.write_text(
        json.dumps({"status": "stopped", "epoch": 1, "rung": "//mnist:search__rung-0"})
    )
    for index, trial in enumerate(data["trials"]):
        at_one = tmp_path / f"{index}.epoch-1.json"
        at_one.write_text(json.dumps({"accuracy": 0.99 if index == 0 else 0.5}))
        last = trial["metrics"] if index else str(stop)
        trial["metrics"] = last
        trial["learning_curve"] = [
            {"epoch": 1, "metrics": str(at_one)},
            {"epoch": 3, "metrics": last},
        ]
        trial["early_stopping"] = {"rungs": [1, 3], "bracket": None}
    manifest.write_text(json.dumps(data))
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 0
    result = json.loads(out["json"].read_text())
    assert [t["hyperparams"]["C"] for t in result["trials"]] == ["1.0", "10", "0.1"]
    stopped = result["trials"][-1]
    assert (stopped["status"], stopped["rung"], stopped["epochs"]) == ("stopped", 0, 1)
    assert stopped["metrics"] == {"accuracy": 0.99}
    assert stopped["learning_curve"] == [{"epoch": 1, "metrics": {"accuracy": 0.99}}]
    assert (result["best"]["rung"], result["best"]["epochs"]) == (1, 3)
    assert result["stopped"] == 1
    rows = list(csv.reader(io.StringIO(out["csv"].read_text())))
    assert rows[0][:5] == ["rank", "name", "status", "rung", "epochs"]
    assert rows[3][2:5] == ["stopped", "0", "1"]
    assert "Early stopping stopped 1 of 3 trials" in out["md"].read_text()

    # A stop record without early_stopping is an error, not a silent "ok".
    del data["trials"][0]["early_stopping"]
    manifest.write_text(json.dumps(data))
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 1


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
        ["rank", "name", "status", "C", "max_iter", "loss", "accuracy", "n"],
        [
            "1",
            "bzl_search__C-1.0__max_iter-100",
            "ok",
            "1.0",
            "100",
            "0.12",
            "0.97",
            "",
        ],
        ["2", "bzl_search__C-10__max_iter-100", "ok", "10", "100", "0.21", "0.94", ""],
        [
            "3",
            "bzl_search__C-0.1__max_iter-100",
            "ok",
            "0.1",
            "100",
            "0.3",
            "0.91",
            "10",
        ],
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
    assert header == "rank,name,status,C,penalty,solver,acc"
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
    assert table[0] == "| rank | name | status | C | max_iter | accuracy | loss |"
    assert set(table[1].replace("|", "").split()) == {"---"}
    assert (
        table[2]
        == "| 1 | bzl_search__C-1\\|0__max_iter-100 | ok | 1\\|0 | 100 | 0.97 | 0.12 |"
    )
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 1", "| 2", "| 3"]
    assert [row.split(" | ")[5] for row in table[2:]] == ["0.97", "0.94", "0.91"]
    assert "## Plots" not in text and "## Failed trials" not in text


def test_output_is_byte_identical_across_runs(tmp_path: Path) -> None:
    manifest = make_search(tmp_path, grid())
    code1, first = run_report(tmp_path, manifest, "accuracy", "max", prefix="a")
    # The second run goes through the command line, as Bazel runs it.
    args, second = report_args(tmp_path, manifest, "accuracy", "max", "b")
    proc = subprocess.run(
        [sys.executable, *REPORT, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (code1, proc.returncode, proc.stdout, proc.stderr) == (0, 0, "", "")
    for ext in OUTPUTS:
        assert first[ext].read_bytes() == second[ext].read_bytes()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == sorted(
        f"{prefix}.{ext}" for prefix in "ab" for ext in OUTPUTS
    )


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


def test_best_model_is_copied_byte_for_byte_with_its_hyperparameters(
    tmp_path: Path,
) -> None:
    manifest = make_search(tmp_path, grid())
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 0
    assert (
        out["best.pkl"].read_bytes() == (tmp_path / "out" / "1.model.pkl").read_bytes()
    )
    assert json.loads(out["best_hyperparams.json"].read_text()) == {
        "C": "1.0",
        "max_iter": "100",
    }


def failure(stage: str, exit_code: int | None, signal: str | None = None) -> str:
    return json.dumps(
        {
            "status": "failed",
            "stage": stage,
            "target": f"//mnist:t_{stage}",
            "exit_code": exit_code,
            "signal": signal,
            "error": f"{stage} script s.py exited with code {exit_code}\nLast lines of its stderr:\n    boom",
            "stderr_tail": "".join(f"line {i}\n" for i in range(30)) + "boom ```",
        }
    )


def test_failed_trials_are_ranked_last_and_reported(tmp_path: Path) -> None:
    trials = grid()
    trials.insert(0, ({"C": "5", "max_iter": "100"}, failure("train", 3)))
    trials.append(({"C": "7", "max_iter": "100"}, failure("evaluate", None, "SIGKILL")))
    manifest = make_search(tmp_path, trials)
    code, out = run_report(tmp_path, manifest, "accuracy", "min")
    assert code == 0
    data = json.loads(out["json"].read_text())
    assert [(t["hyperparams"]["C"], t["status"]) for t in data["trials"]] == [
        ("0.1", "ok"),
        ("10", "ok"),
        ("1.0", "ok"),
        ("5", "failed"),
        ("7", "failed"),
    ]
    assert data["failed"] == 2
    assert data["trials"][3]["metrics"] == {}
    assert data["trials"][3]["failure"]["exit_code"] == 3
    assert (
        out["best.pkl"].read_bytes() == (tmp_path / "out" / "1.model.pkl").read_bytes()
    )

    rows = list(csv.reader(io.StringIO(out["csv"].read_text())))
    assert rows[4] == [
        "4",
        "bzl_search__C-5__max_iter-100",
        "failed",
        "5",
        "100",
        "",
        "",
    ]
    markdown = out["md"].read_text()
    assert "2 of 5 trials failed (ranked last)" in markdown
    assert "### 4. bzl_search__C-5__max_iter-100" in markdown
    assert "train exited with code 3 (//mnist:t_train)." in markdown
    assert "evaluate was killed by signal SIGKILL" in markdown
    assert "line 21" in markdown and "line 20" not in markdown  # the last 10 lines
    assert "````text\nline 21" in markdown  # a fence the tail's ``` can't close
    leaderboard = out["txt"].read_text()
    assert "4. bzl_search__C-5__max_iter-100: train exited with code 3" in leaderboard
    assert "    boom ```" in leaderboard


def test_every_trial_failed(tmp_path: Path, capsys) -> None:
    trials: list[tuple[dict[str, str], dict[str, Any] | str]] = [
        ({"C": "1", "max_iter": "1"}, failure("train", 3)),
        ({"C": "2", "max_iter": "1"}, failure("evaluate", 1)),
    ]
    manifest = make_search(tmp_path, trials)
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert_failed(
        code,
        out,
        capsys,
        "all 2 trials failed, so there is no best model. The first, "
        "bzl_search__C-1__max_iter-1: train exited with code 3",
    )


def test_leaderboard_is_an_aligned_table(tmp_path: Path) -> None:
    manifest = make_search(tmp_path, grid())
    code, out = run_report(tmp_path, manifest, "accuracy", "max")
    assert code == 0
    lines = out["txt"].read_text().splitlines()
    assert lines[0] == f"{TARGET}: 3 trials ranked by accuracy (max)"
    assert lines[2].split() == [
        "rank",
        "name",
        "status",
        "C",
        "max_iter",
        "accuracy",
        "loss",
    ]
    assert set(lines[3].replace(" ", "")) == {"-"}
    assert lines[4].split() == [
        "1",
        "bzl_search__C-1.0__max_iter-100",
        "ok",
        "1.0",
        "100",
        "0.97",
        "0.12",
    ]
    # Columns line up: every row has its accuracy at the header's offset.
    offset = lines[2].index("accuracy")
    assert [line[offset:].split()[0] for line in lines[4:]] == ["0.97", "0.94", "0.91"]


def test_plots_are_embedded_in_the_markdown(tmp_path: Path) -> None:
    manifest = make_search(tmp_path, grid())
    plots = (
        "--plot",
        "accuracy vs C=r.plots/C.png",
        "--plot",
        "a=b=r.plots/C__max_iter.png",
    )
    code, out = run_report(tmp_path, manifest, "accuracy", "max", extra=plots)
    assert code == 0
    markdown = out["md"].read_text()
    assert (
        "## Plots\n\n![accuracy vs C](r.plots/C.png)\n\n![a=b](r.plots/C__max_iter.png)"
        in markdown
    )


def test_people_read_four_significant_digits_and_files_keep_every_digit(
    tmp_path: Path,
) -> None:
    trials = [
        ({"C": "1", "max_iter": "100"}, {"accuracy": 0.9722222222222222, "n": 3}),
        ({"C": "2", "max_iter": "100"}, {"accuracy": 0.97218, "n": 3}),
        ({"C": "3", "max_iter": "100"}, {"accuracy": 0.11714529847914541, "n": 12345}),
    ]
    code, out = run_report(tmp_path, make_search(tmp_path, trials), "accuracy", "max")
    assert code == 0
    txt = out["txt"].read_text(encoding="utf-8").splitlines()
    assert [line.split()[-2:] for line in txt[4:7]] == [
        ["0.97222*", "3"],
        ["0.97218*", "3"],
        ["0.1171", "12345"],
    ]
    note = (
        "A value marked * differs from another value of its column only beyond 4 "
        "significant digits, so both show the digits that tell them apart."
    )
    assert txt[8] == note
    md = out["md"].read_text(encoding="utf-8")
    assert "with accuracy = 0.97222* (model:" in md
    assert "| 3 | bzl_search__C-3__max_iter-100 | ok | 3 | 100 | 0.1171 | 12345 |" in md
    assert f"\n\n{note}\n" in md
    rows = list(csv.reader(io.StringIO(out["csv"].read_text(encoding="utf-8"))))
    assert [row[-2:] for row in rows[1:]] == [
        ["0.9722222222222222", "3"],
        ["0.97218", "3"],
        ["0.11714529847914541", "12345"],
    ]
    data = json.loads(out["json"].read_text(encoding="utf-8"))
    assert data["best"]["metrics"]["accuracy"] == 0.9722222222222222


def test_without_ties_there_is_no_note(tmp_path: Path) -> None:
    code, out = run_report(tmp_path, make_search(tmp_path, grid()), "accuracy", "max")
    assert code == 0
    for ext in ("txt", "md"):
        assert "A value marked" not in out[ext].read_text(encoding="utf-8")


def test_markdown_shows_html_in_values_as_text(tmp_path: Path) -> None:
    hostile = "</script><script>alert(1)</script>"
    trials = [({"C": hostile, "max_iter": "1"}, {"accuracy": 0.5, hostile: 1})]
    code, out = run_report(tmp_path, make_search(tmp_path, trials), "accuracy", "max")
    assert code == 0
    md = out["md"].read_text(encoding="utf-8")
    assert "<script>" not in md and "</script>" not in md
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in md
