"""Tests for databazel/private/leaderboard.py: `bazel run //pkg:search [-- --against OTHER.json]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import leaderboard
import pytest

TARGET = "//mnist:s"


def trial(name: str, accuracy: float | None, **extra: Any) -> dict[str, Any]:
    failed = accuracy is None
    return {
        "name": name,
        "label": f"//mnist:{name}",
        "hyperparams": extra.pop("hyperparams", {"C": name[-1]}),
        "metrics": {} if failed else {"accuracy": accuracy, "loss": 1 - accuracy},
        "status": "failed" if failed else extra.pop("status", "ok"),
        **extra,
    }


def report(*trials: dict[str, Any], metric: str = "accuracy") -> dict[str, Any]:
    ranked = [dict(t, rank=i) for i, t in enumerate(trials, start=1)]
    return {
        "search": TARGET,
        "metric": metric,
        "mode": "max",
        "trials": ranked,
        "best": ranked[0],
    }


BEFORE = report(
    trial("s__C-1", 0.9722),
    trial("s__C-2", 0.95),
    trial("s__C-3", 0.91),
    trial("s__C-4", 0.90),
)
AFTER = report(
    trial("s__C-2", 0.98),  # changed: now the best
    trial("s__C-1", 0.9722),  # unchanged
    trial("s__C-5", 0.93),  # added
    trial("s__C-4", None),  # ok -> failed
)  # s__C-3 removed


def test_added_removed_changed_and_unchanged_trials() -> None:
    c = leaderboard.compare(AFTER, BEFORE)
    assert (c.added, c.removed, c.changed, c.unchanged) == (
        ["s__C-5"],
        ["s__C-3"],
        ["s__C-2", "s__C-4"],
        ["s__C-1"],
    )
    assert [row.cells() for row in c.rows] == [
        ("s__C-5", "added", "accuracy", "", "0.93", ""),
        ("s__C-3", "removed", "accuracy", "0.91", "", ""),
        ("s__C-2", "changed", "accuracy", "0.95", "0.98", "+0.03"),
        ("s__C-2", "changed", "loss", "0.05", "0.02", "-0.03"),
        ("s__C-4", "changed", "status", "ok", "failed", ""),
        ("s__C-4", "changed", "accuracy", "0.9", "", ""),
        ("s__C-4", "changed", "loss", "0.1", "", ""),
    ]


def test_the_same_report_changes_nothing() -> None:
    c = leaderboard.compare(BEFORE, json.loads(json.dumps(BEFORE)))
    assert (c.added, c.removed, c.changed, c.rows) == ([], [], [], [])
    assert c.unchanged == ["s__C-1", "s__C-2", "s__C-3", "s__C-4"]
    text = leaderboard.render_text(c, "main.json")
    assert "Best trial: s__C-1, as before." in text
    assert "  accuracy: 0.9722 -> 0.9722 (unchanged)" in text
    assert "4 trials (4 before): 0 added, 0 removed, 0 changed, 4 unchanged." in text
    assert "delta" not in text  # no table


def test_the_text_names_a_changed_winner_and_lines_up() -> None:
    text = leaderboard.render_text(leaderboard.compare(AFTER, BEFORE), "main.json")
    lines = text.splitlines()
    assert lines[0] == f"{TARGET} against main.json: ranked by accuracy (max)"
    assert "Best trial: s__C-2 (was s__C-1): the winner changed." in lines
    assert "  accuracy: 0.9722 -> 0.98 (+0.0078)" in lines
    assert "4 trials (4 before): 1 added, 1 removed, 2 changed, 1 unchanged." in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("trial "))
    assert lines[header].split() == [
        "trial",
        "change",
        "what",
        "before",
        "after",
        "delta",
    ]
    offset = lines[header].index("delta")
    assert lines[header + 4][offset:] == "+0.03"


def test_values_alike_at_four_digits_show_the_digits_that_differ() -> None:
    before = report(trial("s__C-1", 0.97222))
    after = report(trial("s__C-1", 0.97218))
    (row, *_) = leaderboard.compare(after, before).rows
    assert row.cells() == (
        "s__C-1",
        "changed",
        "accuracy",
        "0.97222",
        "0.97218",
        "-4e-05",
    )


def test_changed_hyperparameters_of_a_trial_of_the_same_name() -> None:
    before = report(trial("s__round-1__trial-0", 0.9, hyperparams={"x": "1.5"}))
    after = report(trial("s__round-1__trial-0", 0.9, hyperparams={"x": "2.25"}))
    rows = leaderboard.compare(after, before).rows
    assert [r.cells() for r in rows] == [
        ("s__round-1__trial-0", "changed", "hyperparameter x", "1.5", "2.25", "")
    ]


def test_another_search_or_metric_is_noted() -> None:
    other = dict(report(trial("s__C-1", 0.9), metric="loss"), search="//x:y")
    text = leaderboard.render_text(leaderboard.compare(BEFORE, other), "y.json")
    assert "note: y.json is the report of //x:y" in text
    assert "note: y.json ranks by loss (max)" in text


def test_markdown_for_a_review_comment() -> None:
    hostile = "</script><script>alert(1)</script>"
    before = report(trial("s__C-1", 0.9, hyperparams={"v": "a|b"}))
    after = report(trial("s__C-1", 0.9, hyperparams={"v": hostile}))
    text = leaderboard.render_markdown(leaderboard.compare(after, before), "main.json")
    assert "| trial | change | what | before | after | delta |" in text
    assert "| s__C-1 | changed | hyperparameter v | a\\|b | &lt;/script&gt;" in text
    assert "<script>" not in text


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run(tmp_path: Path, *args: str) -> list[str]:
    return [
        "--target",
        TARGET,
        "--report",
        str(write(tmp_path / "s.json", AFTER)),
        "--leaderboard",
        str(tmp_path / "s.txt"),
        *args,
    ]


def test_without_against_it_prints_the_leaderboard(tmp_path: Path, capsys) -> None:
    (tmp_path / "s.txt").write_text("the leaderboard\n")
    assert leaderboard.main(run(tmp_path)) == 0
    assert capsys.readouterr().out == "the leaderboard\n"


def test_against_is_relative_to_where_bazel_run_started(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd").mkdir()
    write(tmp_path / "cwd" / "main.json", BEFORE)
    monkeypatch.setenv("BUILD_WORKING_DIRECTORY", str(tmp_path / "cwd"))
    assert leaderboard.main(run(tmp_path, "--against", "main.json")) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{TARGET} against main.json: ranked by accuracy")
    assert leaderboard.main(run(tmp_path, "--against", "main.json", "--markdown")) == 0
    assert capsys.readouterr().out.startswith(f"**{TARGET}** against main.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the report"),
        ("not json", "cannot read the report"),
        ('{"trials": []}', "is not a databazel search report"),
    ],
)
def test_an_unreadable_other_report_is_one_error(
    tmp_path: Path, capsys, content: str | None, message: str
) -> None:
    other = tmp_path / "other.json"
    if content is not None:
        other.write_text(content)
    assert leaderboard.main(run(tmp_path, "--against", str(other))) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"databazel: error: {TARGET}: ")
    assert message in captured.err and captured.err.count("\n") == 1


def test_markdown_needs_against(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        leaderboard.main(run(tmp_path, "--markdown"))
    assert exit_.value.code == 2
    assert "--markdown needs --against OTHER.json" in capsys.readouterr().err
