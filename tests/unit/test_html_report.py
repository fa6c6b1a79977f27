"""Tests for databazel/private/html_report.py, with optuna and plotly from .venv.

The reports are written by report.py from manifests, as in a build. The
browser test of the pages is tests/e2e/test_mnist.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import html_report
import pytest
import report

# `python3 tool.py html_report ARGS`, as the actions start it.
HTML_REPORT = (
    str(Path(html_report.__file__).resolve().parent / "tool.py"),
    "html_report",
)
TARGET = "//pkg:s"
HOSTILE = "</script><script>alert(1)</script>"
FAILURE = {
    "status": "failed",
    "stage": "train",
    "target": "//pkg:s__x",
    "exit_code": 3,
    "signal": None,
    "error": f"train script exited with code 3 {HOSTILE}",
    "stderr_tail": f"Traceback\n{HOSTILE}\n",
}


def write_report(
    root: Path,
    trials: list[tuple[dict[str, str], Any]],
    names: list[str],
    rungs: list[int] | None = None,
) -> Path:
    """A report written by report.py.

    Each trial is (hyperparams, result): metrics (a dict), a list of per-epoch
    metrics (a learning curve; with `rungs`, one per rung, ending in None for
    a trial stopped there), or FAILURE.
    """
    entries = []
    for index, (hyperparams, result) in enumerate(trials):
        name = f"s__{index}"
        curve = []
        if isinstance(result, list):
            stopped = result[-1] is None
            epochs = rungs or list(range(1, len(result) + 1))
            for epoch, metrics in zip(epochs, result):
                path = root / f"{name}.epoch-{epoch}.json"
                record = metrics or {
                    "status": "stopped",
                    "epoch": epochs[len(result) - 2],
                    "rung": "//pkg:s__rung-0",
                }
                path.write_text(json.dumps(record))
                curve.append({"epoch": epoch, "metrics": str(path)})
            if rungs and stopped:
                for epoch in rungs[len(result) :]:
                    curve.append({"epoch": epoch, "metrics": curve[-1]["metrics"]})
            metrics_path = curve[-1]["metrics"]
        else:
            metrics_path = str(root / f"{name}.metrics.json")
            Path(metrics_path).write_text(json.dumps(result))
        model = root / f"{name}.model"
        model.write_text("model")
        entries.append(
            {
                "name": name,
                "label": f"//pkg:{name}",
                "hyperparams": hyperparams,
                "metrics": metrics_path,
                "model": f"pkg/{name}.model",
                "model_path": str(model),
                "learning_curve": curve,
                **(
                    {"early_stopping": {"rungs": rungs, "bracket": None}}
                    if rungs
                    else {}
                ),
            }
        )
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"hyperparam_names": names, "trials": entries}))
    outputs = {
        "json": root / "s.json",
        "csv": root / "s.csv",
        "markdown": root / "s.md",
        "leaderboard": root / "s.txt",
        "best-model": root / "s.best.model",
        "best-hyperparams": root / "s.best_hyperparams.json",
    }
    argv = ["--target", TARGET, "--manifest", str(manifest)]
    argv += ["--metric", "accuracy", "--mode", "max"]
    for flag, path in outputs.items():
        argv += [f"--{flag}-output", str(path)]
    assert report.main(argv) == 0
    return outputs["json"]


def page(report_json: Path, out: Path) -> str:
    assert (
        html_report.main(
            ["--target", TARGET, "--report", str(report_json), "--output", str(out)]
        )
        == 0
    )
    return out.read_text(encoding="utf-8")


def plot_ids(text: str) -> list[str]:
    return re.findall(r'<div id="(plot-[a-z]+)" class="plotly-graph-div"', text)


def grid(root: Path) -> Path:
    trials = []
    for c in ("0.01", "1", "100"):
        for v in ("a", HOSTILE):
            accuracy = 0.9 + float(c) / 1000 + (0.05 if v == "a" else 0)
            trials.append(({"C": c, "v": v, "fixed": "f"}, {"accuracy": accuracy}))
    trials.append(({"C": "1", "v": "a", "fixed": "f"}, FAILURE))
    return write_report(root, trials, ["C", "v"])


@pytest.fixture(scope="module")
def grid_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The report of a grid search and its page, written once for the module's tests."""
    root = tmp_path_factory.mktemp("grid")
    report_json = grid(root)
    return report_json, page(report_json, root / "s.html")


def test_a_grid_search_page(grid_page: tuple[Path, str]) -> None:
    _, text = grid_page
    assert plot_ids(text) == [
        "plot-history",
        "plot-parallel",
        "plot-importance",
        "plot-slice",
        "plot-contour",
    ]
    # plotly.js once, in the page: nothing to fetch.
    assert text.count("<script") == 1 + len(plot_ids(text))
    bundle = re.search(r'<script type="text/javascript">(.*?)</script>', text, re.S)
    assert bundle is not None and len(bundle.group(1)) > 1_000_000
    rest = text.replace(bundle.group(0), "")
    assert re.findall(r"https?://|\bsrc=", rest) == []
    assert '<h2 id="leaderboard">Leaderboard</h2>' in text
    assert "6 trials that trained to the end; 1 failed are left out" in text
    assert "7 trials: 1 failed, 6 ok." in text
    assert "Every trial has fixed = f." in text
    assert '<h2 id="failed">Failed trials</h2>' in text
    assert "train exited with code 3 (//pkg:s__x)." in text
    assert '<td class="status status-failed">failed</td>' in text


def test_untrusted_text_is_text(grid_page: tuple[Path, str]) -> None:
    _, text = grid_page
    # No value reaches the page as markup: not in the leaderboard, the failure,
    # nor the plots' data (where plotly.js shows the entity as the character).
    assert HOSTILE not in text
    assert "alert(1)</script>" not in text
    escaped = "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<td>{escaped}</td>" in text
    data = text[text.index('<h2 id="history"') :]
    assert "&lt;\\u002fscript&gt;&lt;script&gt;alert(1)&lt;\\u002fscript&gt;" in data


def test_the_page_is_the_same_bytes_every_time(
    grid_page: tuple[Path, str], tmp_path: Path
) -> None:
    report_json, first = grid_page
    # Again in a new interpreter, as Bazel runs it.
    again = subprocess.run(
        [
            sys.executable,
            *HTML_REPORT,
            "--target",
            TARGET,
            "--report",
            str(report_json),
            "--output",
            str(tmp_path / "b.html"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert (tmp_path / "b.html").read_text(encoding="utf-8") == first


def test_learning_curves_and_stopped_trials(tmp_path: Path) -> None:
    # Successive halving, rungs at epochs 1 and 3: two trials stopped at
    # the first rung, two trained to the last.
    curves = [
        [{"accuracy": 0.5}, {"accuracy": 0.8}],
        [{"accuracy": 0.6}, {"accuracy": 0.9}],
        [{"accuracy": 0.3}, None],
        [{"accuracy": 0.2}, None],
    ]
    trials = [({"alpha": str(10**-i)}, c) for i, c in enumerate(curves)]
    report_json = write_report(tmp_path, trials, ["alpha"], rungs=[1, 3])
    text = page(report_json, tmp_path / "s.html")
    assert plot_ids(text) == [
        "plot-history",
        "plot-parallel",
        "plot-importance",
        "plot-slice",
        "plot-curves",
    ]
    assert "2 stopped early are left out" in text
    assert '<td class="status status-stopped">stopped</td>' in text
    curves_json = text[text.index('<div id="plot-curves"') :]
    # Four curves; the two stopped ones dotted, ending at epoch 1.
    assert curves_json.count('"mode":"lines+markers"') == 4
    assert curves_json.count('"dash":"dot"') == 2
    assert '"xaxis":{"title":{"text":"epoch"}}' in curves_json
    assert "Needs two hyperparameters" in text  # no contour for one


def test_a_search_of_one_trial_says_what_is_not_drawn(tmp_path: Path) -> None:
    report_json = write_report(tmp_path, [({"C": "1"}, {"accuracy": 0.5})], ["C"])
    text = page(report_json, tmp_path / "s.html")
    assert plot_ids(text) == ["plot-history"]
    assert text.count("No hyperparameter takes two values in this search.") == 3


def test_without_optuna_it_says_what_to_add(
    grid_page: tuple[Path, str], tmp_path: Path
) -> None:
    report_json, _ = grid_page
    out = tmp_path / "s.html"
    # -S: no site-packages, so no optuna (as in a search without html_deps).
    result = subprocess.run(
        [sys.executable, "-S", *HTML_REPORT, "--target", TARGET]
        + ["--report", str(report_json), "--output", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"databazel: error: {TARGET}: plots = True writes an HTML report drawn by "
        "Optuna with plotly (No module named 'optuna'); give the search `html_deps = "
        '[requirement("optuna"), requirement("plotly")]`'
    )
    assert not out.exists()
