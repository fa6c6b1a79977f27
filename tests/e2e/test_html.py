"""The HTML report of a search whose BUILD file and scripts hold a script tag, in a real browser.

In the session's workspace with optuna and plotly (`optuna_ws`); only the
HTML report is built (output group `html`), since that environment has no
matplotlib for the PNG plots.
"""

from __future__ import annotations

import json
from pathlib import Path

from bazel_harness import Workspace, starlark_string
from browser import not_blank, open_page

HOSTILE = "</script><script>alert(1)</script>"

TRAIN = """
import argparse, json
p = argparse.ArgumentParser()
for flag in ("--data", "--model-output-path", "--hyperparams"):
    p.add_argument(flag)
args = p.parse_args()
with open(args.model_output_path, "w") as f:
    f.write(args.hyperparams)
"""

# Scores the trial by x; a metric is named with the script tag.
EVALUATE = f"""
import argparse, json, os
p = argparse.ArgumentParser()
for flag in ("--model-path", "--data-path", "--output-dir"):
    p.add_argument(flag)
args = p.parse_args()
hp = json.load(open(args.model_path))
score = float(hp["x"]) / 10 + (0.05 if hp["v"] == "a" else 0)
with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
    json.dump({{"accuracy": score, {HOSTILE!r}: 1 - score}}, f)
"""


def test_a_script_tag_in_values_and_names_is_shown_as_text(
    optuna_ws: Workspace, tmp_path: Path
) -> None:
    ws = optuna_ws
    ws.write("hostile/train.py", TRAIN)
    ws.write("hostile/evaluate.py", EVALUATE)
    ws.write("hostile/data.txt", "data\n")
    ws.write(
        "hostile/BUILD",
        f"""
        load("@databazel//databazel:defs.bzl", "hyperparam_search")
        load("@fixture_python//:requirements.bzl", "requirement")

        hyperparam_search(
            name = "s",
            grid = {{"v": ["a", {starlark_string(HOSTILE)}], "x": ["1", "2", "3"]}},
            hyperparams = {{"note": {starlark_string(HOSTILE)}}},
            metric = "accuracy",
            plots = True,
            html_deps = [requirement("optuna"), requirement("plotly")],
            training_data = "data.txt",
            train_executable = "train.py",
            test_data = "data.txt",
            eval_executable = "evaluate.py",
        )
        """,
    )
    result = ws.build("//hostile:s", flags=("--output_groups=html",))
    assert result.executed("DatabazelHtml") == 1
    assert result.executed("DatabazelPlot") == 0
    html = ws.bin("hostile/s.html")
    assert HOSTILE not in html.read_text(encoding="utf-8")

    page = open_page(html, tmp_path / "hostile.png")
    assert page.alert is None
    assert page.errors == []
    assert all(count >= 1 for count in page.plots.values()) and page.plots
    # The table shows the value as it is; so do plotly's axes.
    # v of 3 trials, note of all 6
    assert page.texts.count(HOSTILE) == 3 + 6
    assert HOSTILE in page.svg_text
    assert not_blank(page.screenshot) > 0.05
    report = json.loads(ws.bin("hostile/s.json").read_text())
    assert report["trials"][0]["hyperparams"]["note"] == HOSTILE
