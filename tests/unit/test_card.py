"""Tests for databazel/private/card.py, the lineage cards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import card
import pytest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pair(root: Path, rel: str) -> str:
    return json.dumps([rel, str(root / rel)])


def test_python_packages_from_dist_info_names() -> None:
    assert card.python_packages(
        [
            "scikit_learn-1.5.0.dist-info",
            "numpy-2.4.6.dist-info",
            "Pillow-13.0.0.dist-info",
            "zope.interface-7.0.dist-info",
            "not-a-dist-info",
            "-1.0.dist-info",
        ]
    ) == {
        "numpy": "2.4.6",
        "pillow": "13.0.0",
        "scikit-learn": "1.5.0",
        "zope-interface": "7.0",
    }


def test_a_directory_gives_one_entry_per_file(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_bytes(b"b")
    (tmp_path / "d" / "sub" / "a.txt").write_bytes(b"a")
    assert card.file_entries("pkg/d", str(tmp_path / "d")) == [
        {"path": "pkg/d/b.txt", "sha256": sha(b"b")},
        {"path": "pkg/d/sub/a.txt", "sha256": sha(b"a")},
    ]


def write_model(tmp_path: Path, model: bytes = b"weights") -> list[str]:
    for rel, data in (
        ("p/m.epoch-2.model", model),
        ("p/m.epoch-1.model", b"epoch 1"),
        ("p/train.txt", b"rows"),
        ("p/train.py", b"print()"),
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / "h.json").write_text('{"x": "1"}')
    return [
        "model",
        "--target=//p:m",
        f"--output={tmp_path / 'p/m.epoch-2.model.card.json'}",
        f"--model={pair(tmp_path, 'p/m.epoch-2.model')}",
        f"--hyperparams-file={tmp_path / 'h.json'}",
        f"--script={pair(tmp_path, 'p/train.py')}",
        f"--data={pair(tmp_path, 'p/train.txt')}",
        "--dist-info=numpy-2.4.6.dist-info",
        "--epoch=2",
        f"--resumed-from={pair(tmp_path, 'p/m.epoch-1.model')}",
    ]


def test_model_card(tmp_path: Path) -> None:
    assert card.main(write_model(tmp_path)) == 0
    text = (tmp_path / "p/m.epoch-2.model.card.json").read_text()
    assert json.loads(text) == {
        "format": "databazel-card/1",
        "label": "//p:m",
        "model": {"path": "p/m.epoch-2.model", "sha256": sha(b"weights")},
        "status": "ok",
        "epoch": 2,
        "resumed_from": {"path": "p/m.epoch-1.model", "sha256": sha(b"epoch 1")},
        "hyperparams": {"x": "1"},
        "training_data": [{"path": "p/train.txt", "sha256": sha(b"rows")}],
        "script": {"path": "p/train.py", "sha256": sha(b"print()")},
        "python_packages": {"numpy": "2.4.6"},
        "evaluation": None,
        "search": None,
    }
    assert text == card.format_card(json.loads(text))  # canonical


def test_the_card_of_a_failed_training_says_so(tmp_path: Path) -> None:
    failed = (
        b"databazel failed trial v1\n"
        + json.dumps(
            {
                "status": "failed",
                "stage": "train",
                "target": "//p:m",
                "exit_code": 3,
                "signal": None,
                "error": "boom",
                "stderr_tail": "",
            }
        ).encode()
    )
    assert card.main(write_model(tmp_path, failed)) == 0
    written = json.loads((tmp_path / "p/m.epoch-2.model.card.json").read_text())
    assert written["status"] == "failed"


def test_best_card_refuses_a_copy_that_is_not_the_winner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert card.main(write_model(tmp_path)) == 0
    (tmp_path / "p/s.json").write_text(json.dumps({"best": {"label": "//p:m"}}))
    (tmp_path / "p/e.metrics.json").write_text('{"accuracy": 0.5}')
    (tmp_path / "p/s.best.model").write_bytes(b"something else")
    output = tmp_path / "p/s.best.card.json"
    trial = json.dumps(
        [
            "//p:m",
            str(tmp_path / "p/m.epoch-2.model.card.json"),
            str(tmp_path / "p/e.metrics.json"),
            "//p:e",
        ]
    )
    argv = [
        "best",
        "--target=//p:s",
        f"--output={output}",
        f"--report={tmp_path / 'p/s.json'}",
        f"--best-model={pair(tmp_path, 'p/s.best.model')}",
        "--metric=accuracy",
        "--mode=max",
        f"--trial={trial}",
    ]
    assert card.main(argv) == 1
    assert not output.exists()
    err = capsys.readouterr().err
    assert err.startswith("databazel: error: //p:s: cannot write the lineage card")
    assert "p/s.best.model is not a copy of p/m.epoch-2.model" in err

    (tmp_path / "p/s.best.model").write_bytes(b"weights")
    assert card.main(argv) == 0
    best = json.loads(output.read_text())
    assert best["model"] == {"path": "p/s.best.model", "sha256": sha(b"weights")}
    assert best["evaluation"] == {"label": "//p:e", "metrics": {"accuracy": 0.5}}
    assert best["search"]["trial"] == "//p:m" and best["label"] == "//p:m"
