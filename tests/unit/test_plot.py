"""Tests for databazel/private/plot.py, with matplotlib from .venv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import plot
import pytest
from pngcheck import png_size

# `python3 tool.py plot ARGS`, as the actions start it.
PLOT = (str(Path(plot.__file__).resolve().parent / "tool.py"), "plot")
TARGET = "//pkg:s"


def trial(
    rank: int, hyperparams: dict[str, str], accuracy: float | None
) -> dict[str, Any]:
    failed = accuracy is None
    return {
        "rank": rank,
        "name": "s__" + "__".join(f"{k}-{v}" for k, v in hyperparams.items()),
        "hyperparams": hyperparams,
        "metrics": {} if failed else {"accuracy": accuracy},
        "status": "failed" if failed else "ok",
        "failure": {"stage": "train"} if failed else None,
    }


def write_report(path: Path, trials: list[dict[str, Any]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "search": TARGET,
                "metric": "accuracy",
                "mode": "max",
                "trials": trials,
                "best": trials[0],
            }
        )
    )
    return path


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The matplotlib figure of each image plot.py saves, by file name (still written)."""
    saved: dict[str, Any] = {}
    original = plot._save

    def save(fig: Any, path: str) -> None:
        saved[Path(path).name] = fig
        original(fig, path)

    monkeypatch.setattr(plot, "_save", save)
    return saved


def texts(ax: Any) -> dict[tuple[float, float], str]:
    return {tuple(t.get_position()): t.get_text() for t in ax.texts}


def ticks(labels: Any) -> list[str]:
    return [label.get_text() for label in labels]


def test_grid_plots_with_a_heatmap_and_a_failed_cell(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    values = [
        ("0.01", "50", 0.9),
        ("0.01", "100", 0.92),
        ("1", "50", 0.97),
        ("1", "100", None),
        ("100", "50", 0.8),
        ("100", "100", 0.85),
    ]
    ok = sorted((v for v in values if v[2] is not None), key=lambda v: -v[2])  # type: ignore[operator]
    trials = [
        trial(i, {"C": c, "max_iter": m}, a)
        for i, (c, m, a) in enumerate(ok + [values[3]], start=1)
    ]
    report = write_report(tmp_path / "r.json", trials)
    outputs = {
        name: tmp_path / "plots" / f"{name}.png"
        for name in ("C", "max_iter", "C__max_iter")
    }
    code = plot.main(
        [
            "--target", TARGET, "--report", str(report),
            "--single", f"C={outputs['C']}", "--single", f"max_iter={outputs['max_iter']}",
            "--pair", f"C,max_iter={outputs['C__max_iter']}",
        ]
    )  # fmt: skip
    assert code == 0
    for path in outputs.values():
        assert png_size(path) == (640, 480)

    # The pair is a heatmap: C across (numeric order), max_iter up, each cell
    # its score, the failed trial's cell empty and marked.
    heatmap, colorbar = figures["C__max_iter.png"].axes
    assert colorbar.get_ylabel() == "accuracy"
    (image,) = heatmap.images
    cells = image.get_array()
    assert cells.shape == (2, 3)
    assert [[round(float(v), 2) for v in row] for row in cells.filled(-1)] == [
        [0.9, 0.97, 0.8],
        [0.92, -1, 0.85],
    ]
    assert texts(heatmap) == {
        (0, 0): "0.9", (1, 0): "0.97", (2, 0): "0.8",
        (0, 1): "0.92", (1, 1): "failed", (2, 1): "0.85",
    }  # fmt: skip
    assert ticks(heatmap.get_xticklabels()) == ["0.01", "1", "100"]
    assert ticks(heatmap.get_yticklabels()) == ["50", "100"]
    assert (heatmap.get_xlabel(), heatmap.get_ylabel()) == ("C", "max_iter")
    assert heatmap.get_title() == f"{TARGET}: accuracy over C and max_iter"

    # A single plot: every successful trial a point on a log axis (C spans
    # 0.01 to 100), the best per value joined, the best trial a star.
    (single,) = figures["C.png"].axes
    assert single.get_xscale() == "log"
    points, star = single.collections
    assert sorted(map(tuple, points.get_offsets().tolist())) == sorted(
        (float(c), a) for c, _, a in ok
    )
    assert star.get_offsets().tolist() == [[1.0, 0.97]]
    (best_line,) = single.lines
    assert best_line.get_xydata().tolist() == [[0.01, 0.92], [1.0, 0.97], [100.0, 0.85]]
    # max_iter spans a factor of 2: a linear axis.
    assert figures["max_iter.png"].axes[0].get_xscale() == "linear"


def test_random_search_pair_is_a_scatter_plot_and_categorical_axes_work(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    trials = [
        trial(1, {"lr": "0.0123", "act": "relu"}, 0.9),
        trial(2, {"lr": "0.5", "act": "tanh"}, 0.8),
        trial(3, {"lr": "1.2e-05", "act": "relu"}, 0.7),
    ]
    report = write_report(tmp_path / "r.json", trials)
    out = tmp_path / "pair.png"
    single = tmp_path / "act.png"
    assert (
        plot.main(
            [
                "--target",
                TARGET,
                "--report",
                str(report),
                "--pair",
                f"lr,act={out}",
                "--single",
                f"act={single}",
            ]
        )
        == 0
    )
    assert png_size(out) == (640, 480)
    assert png_size(single) == (640, 480)

    # Not a full grid: a scatter plot, lr on a log axis, act as categories
    # in order of first appearance, each point coloured by its score.
    pair = figures["pair.png"].axes[0]
    assert len(pair.images) == 0
    (points,) = pair.collections
    assert points.get_offsets().tolist() == [[0.0123, 0.0], [0.5, 1.0], [1.2e-05, 0.0]]
    assert points.get_array().tolist() == [0.9, 0.8, 0.7]
    assert pair.get_xscale() == "log"
    assert ticks(pair.get_yticklabels()) == ["relu", "tanh"]
    categorical = figures["act.png"].axes[0]
    assert ticks(categorical.get_xticklabels()) == ["relu", "tanh"]
    assert categorical.collections[0].get_offsets().tolist() == [
        [0.0, 0.9],
        [1.0, 0.8],
        [0.0, 0.7],
    ]


def test_images_are_byte_identical_across_runs(tmp_path: Path) -> None:
    trials = [trial(1, {"x": "1"}, 0.9), trial(2, {"x": "2"}, 0.5)]
    report = write_report(tmp_path / "r.json", trials)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    assert (
        plot.main(
            ["--target", TARGET, "--report", str(report), "--single", f"x={first}"]
        )
        == 0
    )
    proc = subprocess.run(
        [
            sys.executable,
            *PLOT,
            "--target",
            TARGET,
            "--report",
            str(report),
            "--single",
            f"x={second}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert first.read_bytes() == second.read_bytes()


def test_without_matplotlib_the_error_says_what_to_do(tmp_path: Path) -> None:
    report = write_report(tmp_path / "r.json", [trial(1, {"x": "1"}, 0.9)])
    out = tmp_path / "x.png"
    # -S: no site-packages, so no matplotlib (as in a standard-library-only python_env).
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            *PLOT,
            "--target",
            TARGET,
            "--report",
            str(report),
            "--single",
            f"x={out}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"databazel: error: {TARGET}: plots = True needs matplotlib"
    )
    assert "set plots = False" in proc.stderr
    assert not out.exists()


def test_learning_curve_plot_draws_each_chain_once(tmp_path: Path) -> None:
    trials = [
        trial(1, {"x": "1", "epochs": "3"}, 0.9),
        trial(2, {"x": "1", "epochs": "2"}, 0.8),
        trial(3, {"x": "0", "epochs": "3"}, 0.6),
    ]
    curves = {1: [0.5, 0.8, 0.9], 2: [0.5, 0.8], 3: [0.4, 0.5, 0.6]}
    for t in trials:
        t["learning_curve"] = [
            {"epoch": k, "metrics": {"accuracy": a}}
            for k, a in enumerate(curves[t["rank"]], start=1)
        ]
    report = write_report(tmp_path / "r.json", trials)
    out = tmp_path / "plots" / "learning_curve.png"
    assert (
        plot.main(
            ["--target", TARGET, "--report", str(report), "--learning-curve", str(out)]
        )
        == 0
    )
    assert png_size(out) == (640, 480)

    drawn: list[tuple[list[int], list[float]]] = []

    class Axes:
        def plot(self, xs: list[int], ys: list[float], **kwargs: Any) -> None:
            drawn.append((list(xs), list(ys)))

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    class Pyplot:
        def subplots(self, **kwargs):
            return Axes(), Axes()  # the figure's methods are no-ops too

        def close(self, fig):
            pass

    saved: list[str] = []
    original = plot._save
    plot._save = lambda fig, path: saved.append(path)
    try:
        plot.plot_learning_curve(Pyplot(), json.loads(report.read_text()), "x.png")
    finally:
        plot._save = original
    # The epochs-2 trial's curve is the beginning of the epochs-3 one: drawn once.
    assert drawn == [([1, 2, 3], [0.5, 0.8, 0.9]), ([1, 2, 3], [0.4, 0.5, 0.6])]
    assert saved == ["x.png"]


def test_a_bad_plot_argument_is_one_error_not_a_traceback(tmp_path: Path) -> None:
    report = write_report(tmp_path / "r.json", [trial(1, {"x": "1", "y": "2"}, 0.9)])
    single = tmp_path / "x.png"
    for flag, bad, form in [
        ("--pair", f"x={tmp_path / 'p.png'}", "HP1,HP2=OUT.png"),
        ("--single", "x", "HP=OUT.png"),
        ("--single", f"x,y={tmp_path / 's.png'}", "HP=OUT.png"),
    ]:
        proc = subprocess.run(
            [sys.executable, *PLOT, "--target", TARGET, "--report", str(report)]
            + ["--single", f"x={single}", flag, bad],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1
        assert proc.stderr == (
            f"databazel: error: {TARGET}: bad plot argument {json.dumps(bad)}; "
            f"expected {form}\n"
        )
        assert not single.exists()
