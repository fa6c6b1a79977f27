"""Tests for databazel/private/rung.py and the early-stopping records it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import records
import rung

TARGET = "//pkg:s__rung-0"


def write_rung(
    root: Path,
    metrics: dict[str, Any],
    previous: dict[str, Any] | None = None,
    eta: int = 3,
    mode: str = "max",
) -> Path:
    """A rung manifest over trials named by `metrics` (a dict, or a record, per trial)."""
    entries = []
    for name, value in metrics.items():
        path = root / f"{name}.metrics.json"
        path.write_text(json.dumps(value))
        entry = {
            "name": name,
            "metrics": str(path),
            "decision": str(root / "out" / f"{name}.decision.json"),
            "previous": None,
        }
        if previous is not None:
            before = root / f"{name}.before.json"
            before.write_text(records.format_record(previous[name]))
            entry["previous"] = str(before)
        entries.append(entry)
    manifest = root / "manifest.json"
    manifest.write_text(
        json.dumps(
            {"epoch": 3, "metric": "acc", "mode": mode, "eta": eta, "trials": entries}
        )
    )
    return manifest


def decisions(root: Path) -> dict[str, Any]:
    return {
        p.name.removesuffix(".decision.json"): json.loads(p.read_text())
        for p in sorted((root / "out").glob("*.decision.json"))
    }


def test_the_best_third_is_promoted(tmp_path: Path) -> None:
    scores = {"a": 0.5, "b": 0.9, "c": 0.1, "d": 0.8, "e": 0.2, "f": 0.3, "g": 0.4}
    manifest = write_rung(tmp_path, {k: {"acc": v} for k, v in scores.items()})
    assert rung.main(["--target", TARGET, "--manifest", str(manifest)]) == 0
    got = decisions(tmp_path)
    # 7 // 3 = 2 promoted: the two best.
    assert {k for k, v in got.items() if v == records.PROMOTED} == {"b", "d"}
    assert got["a"] == {"status": "stopped", "epoch": 3, "rung": TARGET}


def test_a_tie_at_the_cut_goes_to_the_first_name_not_the_first_listed(
    tmp_path: Path,
) -> None:
    # Three tied for the two places (6 // 3), listed out of name order.
    scores = {"e": 0.9, "d": 0.9, "a": 0.2, "b": 0.9, "c": 0.1, "f": 0.3}
    manifest = write_rung(tmp_path, {k: {"acc": v} for k, v in scores.items()})
    assert rung.main(["--target", TARGET, "--manifest", str(manifest)]) == 0
    got = decisions(tmp_path)
    assert sorted(k for k, v in got.items() if v == records.PROMOTED) == ["b", "d"]
    assert got["e"] == {"status": "stopped", "epoch": 3, "rung": TARGET}
    # The same in min mode.
    manifest = write_rung(
        tmp_path, {k: {"acc": -v} for k, v in scores.items()}, mode="min"
    )
    assert rung.main(["--target", TARGET, "--manifest", str(manifest)]) == 0
    assert sorted(
        k for k, v in decisions(tmp_path).items() if v == records.PROMOTED
    ) == ["b", "d"]


def test_min_mode_and_at_least_one_is_promoted(tmp_path: Path) -> None:
    manifest = write_rung(tmp_path, {"a": {"acc": 2}, "b": {"acc": 1}}, mode="min")
    assert rung.main(["--target", TARGET, "--manifest", str(manifest)]) == 0
    assert decisions(tmp_path)["b"] == records.PROMOTED
    assert decisions(tmp_path)["a"]["status"] == "stopped"


def test_an_earlier_stop_is_kept_byte_for_byte_and_counts_no_slot(
    tmp_path: Path,
) -> None:
    earlier = records.stop_record(1, "//pkg:s__rung-0")
    stopped = {"status": "stopped", "epoch": 1, "rung": "//pkg:s__rung-0"}
    manifest = write_rung(
        tmp_path,
        {"a": stopped, "b": {"acc": 0.2}, "c": {"acc": 0.1}, "d": {"acc": 0.3}},
        previous={
            "a": earlier,
            "b": records.PROMOTED,
            "c": records.PROMOTED,
            "d": records.PROMOTED,
        },
    )
    assert rung.main(["--target", "//pkg:s__rung-1", "--manifest", str(manifest)]) == 0
    out = tmp_path / "out"
    assert (out / "a.decision.json").read_text() == records.format_record(earlier)
    # Three alive: 3 // 3 = 1 promoted.
    assert decisions(tmp_path)["d"] == records.PROMOTED
    assert decisions(tmp_path)["b"]["rung"] == "//pkg:s__rung-1"


def test_a_failed_trial_is_stopped_and_its_slot_counts(tmp_path: Path) -> None:
    failure = {
        "status": "failed",
        "stage": "train",
        "target": "//pkg:s__q-1",
        "exit_code": 1,
        "signal": None,
        "error": "boom",
        "stderr_tail": "",
    }
    manifest = write_rung(
        tmp_path,
        {"a": failure, "b": {"acc": 0.1}, "c": {"acc": 0.2}},
        eta=2,
    )
    assert rung.main(["--target", TARGET, "--manifest", str(manifest)]) == 0
    got = decisions(tmp_path)
    assert got["a"]["status"] == "stopped"
    assert [k for k, v in got.items() if v == records.PROMOTED] == ["c"]


def test_a_missing_metric_fails_and_writes_no_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_rung(tmp_path, {"a": {"acc": 1}, "b": {"loss": 2}})
    assert rung.main(["--target", TARGET, "--manifest", str(manifest)]) == 1
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())
    err = capsys.readouterr().err
    assert f'databazel: error: {TARGET}: trial b has no metric "acc"' in err


def test_a_promoted_trial_whose_evaluation_is_a_stop_record_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped = {"status": "stopped", "epoch": 1, "rung": "//pkg:s__rung-0"}
    manifest = write_rung(tmp_path, {"a": stopped})
    assert rung.main(["--target", TARGET, "--manifest", str(manifest)]) == 1
    assert "is a stop record" in capsys.readouterr().err


def test_read_decision_rejects_anything_else(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"status": "maybe"}')
    with pytest.raises(records.RunnerError, match="neither"):
        records.read_decision(str(path))
    path.write_text('{"status": "stopped", "epoch": 0, "rung": "x"}')
    with pytest.raises(records.RunnerError, match="positive int"):
        records.read_decision(str(path))
    path.write_text(records.format_record(records.PROMOTED))
    assert records.read_decision(str(path)) is None
