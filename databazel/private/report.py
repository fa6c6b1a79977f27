"""Rank the trials of a hyperparameter search and write a leaderboard.

Bazel runs this tool (through tool.py) as::

    python3 tool.py report --target //pkg:search --manifest MANIFEST.json \\
        --metric NAME --mode max|min \\
        --json-output R.json --csv-output R.csv --markdown-output R.md \\
        --leaderboard-output R.txt --best-model-output R.best.EXT \\
        --best-hyperparams-output R.best_hyperparams.json \\
        [--plot "TITLE=RELATIVE/PATH.png" ...]

MANIFEST.json lists the trials in search order::

    {"hyperparam_names": ["C", "max_iter"],
     "trials": [{"name": "...", "label": "//pkg:...",
                 "hyperparams": {"C": "0.1", "max_iter": "100"},
                 "metrics": "path/to/trial.metrics.json",
                 "model": "short/path/of/model",
                 "model_path": "exec/path/of/model",
                 "learning_curve": [{"epoch": 1, "metrics": "path"}, ...],
                 "early_stopping": {"rungs": [1, 3, 9], "bracket": null},
                 "hyperparams_file": "path/or/null", "round": 1}, ...]}

A trial's optional "hyperparams_file" is the hyperparameters file its script
was given; its values are read and override "hyperparams" (a trial of a
model-based search's later round has its values only there).  A trial's
optional "round" (an int; null or absent: none) is its round in a search in
rounds: the tables get a "round" column after "status", the JSON a "round"
field.

Each "metrics" file is read and validated like a runner.py metrics file; it
may also be a failure record (runner.py, ``--allow-failure``), which makes the
trial a failed one.  Successful trials are ranked by the chosen metric (max:
highest first, min: lowest first), then the failed ones; ties keep manifest
order.  Hyperparameter columns follow hyperparam_names, then any other
hyperparameter keys, sorted.  Metric columns are the chosen metric, then the
other metric names, sorted.  The JSON and CSV reports write numbers with
repr() (every digit); the Markdown report and the leaderboard as people read
them (display.py: 4 significant digits, and values of a column that would
print alike but differ with the digits that tell them apart, marked ``*``).
Each trial's JSON has its ``number``, its position in the manifest (the
search's order, 0 first), and the report the ``hyperparam_names``.  A
trial's optional "learning_curve" lists the metrics files of the epochs its
evaluation covered; the JSON report gives each trial ``"learning_curve":
[{"epoch": K, "metrics": {...}}, ...]`` (empty metrics for an epoch whose
evaluation failed; an empty list for a trial evaluated once).  The best
trial's model file is copied byte for byte, and its hyperparameters are written as
JSON; if every trial failed, that is an error.  ``--plot`` adds an image link
(relative to the Markdown file) to the Markdown report.  All outputs are
written atomically; on any error none is written and one
``databazel: error: <target>: ...`` line is printed.

A trial with "early_stopping" (a search with ``early_stopping``) was
evaluated at its bracket's rungs (``rungs``: their epochs).  If a rung stopped
it, its last metrics file is a stop record (runner.py ``--decision``): the
trial is "stopped", its metrics are those of the last epoch it trained, and
its learning curve ends there.  Trials that reached the last rung ("ok") are
ranked first, by the metric; then the stopped ones, those that trained more
epochs first, each group by the metric; then the failed ones.  The best trial
is an "ok" one.  Each such trial's JSON gets "epochs" (the epochs it trained),
"rung" (the index of the last rung it reached) and "bracket" (Hyperband), and
the tables get these columns.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
from typing import Any


from contract import RunnerError
from display import TIE_NOTE, any_marked, format_column, markdown_cell
from outputs import copy_atomic, run_tool, write_atomic
from ranking import (
    Trial,
    best_trial,
    describe_failure,
    load_manifest,
    rank,
    stderr_tail,
)


def columns(
    names: list[str], trials: list[dict[str, Any]], metric: str
) -> tuple[list[str], list[str]]:
    """The hyperparameter columns and the metric columns, in table order.

    `trials` are in the JSON report's form (`Trial.to_json`).
    """
    extra_hp = {k for t in trials for k in t["hyperparams"] if k not in names}
    other_metrics = {k for t in trials for k in t["metrics"] if k != metric}
    return list(names) + sorted(extra_hp), [metric] + sorted(other_metrics)


def extra_columns(trials: list[dict[str, Any]]) -> list[str]:
    """The columns between `status` and the hyperparameters.

    `round` in a search in rounds; `rung` and `epochs` in a search with early
    stopping, after `bracket` with Hyperband.
    """
    rounds = ["round"] if any(t.get("round") is not None for t in trials) else []
    if not any("rung" in t for t in trials):
        return rounds
    hyperband = any(t.get("bracket") is not None for t in trials)
    return rounds + (["bracket"] if hyperband else []) + ["rung", "epochs"]


def table(
    trials: list[dict[str, Any]],
    hp_columns: list[str],
    metric_columns: list[str],
    readable: bool = False,
) -> list[list[str]]:
    """Header row plus one row per trial, in the order of `trials`, as strings.

    `trials` are in the JSON report's form, best first. Metrics are written
    with repr() (every digit, for the CSV), or with `readable` as people read
    them (display.py: 4 significant digits, ties that are not ties marked).
    """
    extra = extra_columns(trials)
    rows = [["rank", "name", "status"] + extra + hp_columns + metric_columns]
    for trial in trials:
        rows.append(
            [str(trial["rank"]), trial["name"], trial["status"]]
            + ["" if trial.get(k) is None else str(trial[k]) for k in extra]
            + [trial["hyperparams"].get(k, "") for k in hp_columns]
        )
    for metric in metric_columns:
        values = [t["metrics"].get(metric) for t in trials]
        cells = (
            format_column(values)
            if readable
            else ["" if v is None else repr(v) for v in values]
        )
        for row, cell in zip(rows[1:], cells):
            row.append(cell)
    return rows


def _metric_cells(rows: list[list[str]], metric_columns: list[str]) -> list[str]:
    """The metric cells of a table's rows."""
    return [cell for row in rows[1:] for cell in row[-len(metric_columns) :]]


def render_json(
    target: str, metric: str, mode: str, names: list[str], trials: list[dict[str, Any]]
) -> str:
    report = {
        "search": target,
        "metric": metric,
        "mode": mode,
        "hyperparam_names": names,
        "trials": trials,
        "best": trials[0],
        "failed": sum(1 for t in trials if t["status"] == "failed"),
        "stopped": sum(1 for t in trials if t["status"] == "stopped"),
    }
    return (
        json.dumps(
            report, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False
        )
        + "\n"
    )


def render_csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _fence(text: str) -> str:
    """`text` in a fenced code block whose fence no line of it can close."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}"


def _tie_note(rows: list[list[str]], metric_columns: list[str]) -> list[str]:
    """The line under a readable table that explains TIE_MARK, if a cell has it."""
    return [TIE_NOTE + "."] if any_marked(_metric_cells(rows, metric_columns)) else []


@dataclasses.dataclass(frozen=True)
class Readable:
    """A ranked search as the files people read show it."""

    target: str
    metric: str
    mode: str
    ranked: list[Trial]  # best first
    rows: list[list[str]]  # the readable table: header, then a row per trial
    metric_columns: list[str]


def render_markdown(search: Readable, plots: list[tuple[str, str]]) -> str:
    """The Markdown report."""
    target, metric, mode, ranked = (
        search.target,
        search.metric,
        search.mode,
        search.ranked,
    )
    rows, metric_columns = search.rows, search.metric_columns
    best = ranked[0]
    direction = "higher is better" if mode == "max" else "lower is better"
    failed = [(p, t) for p, t in enumerate(ranked, start=1) if t.failure is not None]
    best_value = rows[1][len(rows[0]) - len(metric_columns)]
    summary = (
        f"Ranked by {markdown_cell(metric)} ({mode}, {direction}). "
        f"Best trial: {markdown_cell(best.name)} with {markdown_cell(metric)} = "
        f"{best_value} (model: {markdown_cell(best.model)})."
    )
    stopped = sum(1 for t in ranked if t.status == "stopped")
    if stopped:
        summary += (
            f" Early stopping stopped {stopped} of {len(ranked)} trials "
            "(ranked after those that reached the last rung)."
        )
    if failed:
        summary += f" {len(failed)} of {len(ranked)} trials failed (ranked last)."
    lines = [
        f"# Hyperparameter search {markdown_cell(target)}",
        "",
        summary,
        "",
        "| " + " | ".join(markdown_cell(c) for c in rows[0]) + " |",
        "|" + "|".join(" --- " for _ in rows[0]) + "|",
    ]
    lines += [
        "| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows[1:]
    ]
    note = _tie_note(rows, metric_columns)
    if note:
        lines += ["", *note]
    if plots:
        lines += ["", "## Plots"]
        for title, path in plots:
            lines += ["", f"![{markdown_cell(title)}]({path})"]
    if failed:
        lines += ["", "## Failed trials"]
        for position, trial in failed:
            assert trial.failure is not None
            lines += [
                "",
                f"### {position}. {markdown_cell(trial.name)}",
                "",
                f"{describe_failure(trial.failure)} ({markdown_cell(trial.failure['target'])}).",
                "",
                _fence(trial.failure["error"]),
            ]
            if trial.failure["stderr_tail"]:
                lines += [
                    "",
                    "Last lines of its stderr:",
                    "",
                    _fence(stderr_tail(trial.failure)),
                ]
    return "\n".join(lines) + "\n"


def render_leaderboard(search: Readable) -> str:
    """The leaderboard as an aligned text table, for the terminal."""
    rows, ranked = search.rows, search.ranked
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"{search.target}: {len(ranked)} trials ranked by {search.metric} ({search.mode})",
        "",
    ]
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    note = _tie_note(rows, search.metric_columns)
    if note:
        lines += ["", *note]
    for position, trial in enumerate(ranked, start=1):
        if trial.failure is not None:
            lines += [
                "",
                f"{position}. {trial.name}: {describe_failure(trial.failure)}",
            ]
            lines += ["    " + line for line in stderr_tail(trial.failure).splitlines()]
    return "\n".join(lines) + "\n"


def render_best_hyperparams(best: Trial) -> str:
    return (
        json.dumps(best.hyperparams, sort_keys=True, indent=2, ensure_ascii=False)
        + "\n"
    )


def parse_plot(text: str) -> tuple[str, str]:
    """A --plot argument "TITLE=PATH" as (title, path)."""
    title, sep, path = text.rpartition("=")
    if not sep or not title or not path:
        raise RunnerError(f"--plot needs TITLE=PATH, got {json.dumps(text)}")
    return title, path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="report.py", description="databazel search report"
    )
    for flag in (
        "--target",
        "--manifest",
        "--metric",
        "--mode",
        "--json-output",
        "--csv-output",
        "--markdown-output",
        "--leaderboard-output",
        "--best-model-output",
        "--best-hyperparams-output",
    ):
        parser.add_argument(flag, required=True)
    parser.add_argument("--plot", action="append", default=[], metavar="TITLE=PATH")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    outputs: list[str] = [
        args.json_output,
        args.csv_output,
        args.markdown_output,
        args.leaderboard_output,
        args.best_hyperparams_output,
        args.best_model_output,
    ]

    def work() -> None:
        plots = [parse_plot(p) for p in args.plot]
        names, trials = load_manifest(args.manifest)
        ranked = rank(trials, args.metric, args.mode)
        best = best_trial(ranked)
        records = [t.to_json(position) for position, t in enumerate(ranked, start=1)]
        hp_columns, metric_columns = columns(names, records, args.metric)
        readable = Readable(
            args.target,
            args.metric,
            args.mode,
            ranked,
            table(records, hp_columns, metric_columns, readable=True),
            metric_columns,
        )
        texts = [
            render_json(args.target, args.metric, args.mode, names, records),
            render_csv(table(records, hp_columns, metric_columns)),
            render_markdown(readable, plots),
            render_leaderboard(readable),
            render_best_hyperparams(best),
        ]
        for path in outputs:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        for path, text in zip(outputs, texts):
            write_atomic(path, text)
        copy_atomic(best.model_path, args.best_model_output)

    return run_tool(args.target, "report", outputs, work)
