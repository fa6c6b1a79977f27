"""Tests for databazel/private/gate.py, the checker behind metrics_test."""

from __future__ import annotations

import json
from pathlib import Path

import gate
import pytest
from contract import RunnerError


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = gate.main(["--target", "//p:gate", "--subject", "//p:eval", *argv])
    return code, capsys.readouterr().out.splitlines()


def metrics_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "e.metrics.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_parse_bar() -> None:
    assert gate.parse_bar("at_least", "accuracy=0.9") == gate.Bar(
        "accuracy", "at_least", 0.9
    )
    assert gate.parse_bar("at_most", "a=b=1e-3").metric == "a=b"
    with pytest.raises(RunnerError, match='at_least\\["accuracy"\\] is not a number'):
        gate.parse_bar("at_least", "accuracy=high")
    with pytest.raises(RunnerError, match="needs NAME=NUMBER"):
        gate.parse_bar("at_least", "accuracy")
    with pytest.raises(RunnerError, match="must be finite"):
        gate.parse_bar("at_most", "loss=nan")


def test_a_metric_named_like_an_option_in_one_word(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As metrics_test passes bars: `--at-most=NAME=NUMBER`, one word.
    path = metrics_file(tmp_path, '{"-n": 3, "--help": 1}')
    code, lines = run(
        capsys, "--metrics-file", path, "--at-most=-n=5", "--at-least=--help=2"
    )
    assert code == 1
    assert lines == [
        "FAILED //p:gate: //p:eval: --help = 1, below the bar: at_least 2",
        "PASSED //p:gate: //p:eval: -n = 3, ok: at_most 5",
    ]


def test_every_bar_is_checked_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = metrics_file(tmp_path, '{"accuracy": 0.91, "loss": 0.4}')
    code, lines = run(
        capsys,
        "--metrics-file",
        path,
        "--at-least",
        "accuracy=0.95",
        "--at-most",
        "loss=0.5",
        "--at-least",
        "f1=0.1",
    )
    assert code == 1
    assert lines == [
        "FAILED //p:gate: //p:eval: accuracy = 0.91, below the bar: at_least 0.95",
        'FAILED //p:gate: //p:eval: no metric "f1" (it has: accuracy, loss)',
        "PASSED //p:gate: //p:eval: loss = 0.4, ok: at_most 0.5",
    ]
    code, lines = run(capsys, "--metrics-file", path, "--at-least", "accuracy=0.91")
    assert code == 0
    assert lines == ["PASSED //p:gate: //p:eval: accuracy = 0.91, ok: at_least 0.91"]
    code, lines = run(capsys, "--metrics-file", path, "--at-most", "loss=0.3")
    assert code == 1
    assert lines == [
        "FAILED //p:gate: //p:eval: loss = 0.4, above the bar: at_most 0.3"
    ]


def test_a_failure_record_fails_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = {
        "status": "failed",
        "stage": "train",
        "target": "//p:m",
        "exit_code": 3,
        "signal": None,
        "error": "train script mnist/train.py exited with code 3\nmore",
        "stderr_tail": "boom",
    }
    path = metrics_file(tmp_path, json.dumps(record))
    code, lines = run(capsys, "--metrics-file", path, "--at-least", "accuracy=0.5")
    assert code == 1
    assert lines == [
        "FAILED //p:gate: //p:eval recorded a failure instead of metrics: train of "
        "//p:m failed: train script mnist/train.py exited with code 3"
    ]


def test_a_search_is_judged_by_its_best_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {
        "best": {"label": "//p:s__x-1", "status": "ok", "metrics": {"accuracy": 0.8}},
        "trials": [],
    }
    path = metrics_file(tmp_path, json.dumps(report))
    code, lines = run(
        capsys, "--metrics-file", path, "--search", "--at-least", "accuracy=0.9"
    )
    assert code == 1
    assert lines == [
        "FAILED //p:gate: //p:eval (best trial //p:s__x-1): accuracy = 0.8, "
        "below the bar: at_least 0.9"
    ]


def test_unreadable_metrics_fail_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = metrics_file(tmp_path, "not json")
    code, lines = run(capsys, "--metrics-file", path, "--at-least", "accuracy=0.9")
    assert code == 1
    assert lines[0].startswith(f"FAILED //p:gate: //p:eval: cannot read {path}: ")


def test_metrics_and_bars_read_to_four_digits_or_as_many_as_tell_them_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = metrics_file(
        tmp_path, '{"accuracy": 0.9722222222222222, "loss": 0.11714529847914541}'
    )
    code, lines = run(
        capsys,
        "--metrics-file",
        path,
        "--at-least",
        "accuracy=0.96",
        "--at-most",
        "loss=0.1171452984",
    )
    assert code == 1
    assert lines == [
        "PASSED //p:gate: //p:eval: accuracy = 0.9722, ok: at_least 0.96",
        # Alike at 4 digits: enough digits to see which side of the bar it is.
        "FAILED //p:gate: //p:eval: loss = 0.1171452985, above the bar: "
        "at_most 0.1171452984",
    ]
