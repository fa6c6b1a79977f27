"""Rank the trials of a hyperparameter search and write a leaderboard.

Bazel calls this file as::

    python3 report.py --target //pkg:search --manifest MANIFEST.json \\
        --metric NAME --mode max|min \\
        --json-output R.json --csv-output R.csv --markdown-output R.md

MANIFEST.json lists the trials in grid order::

    {"hyperparam_names": ["C", "max_iter"],
     "trials": [{"name": "...", "label": "//pkg:...",
                 "hyperparams": {"C": "0.1", "max_iter": "100"},
                 "metrics": "path/to/trial.metrics.json",
                 "model": "path/to/model"}, ...]}

Each "metrics" file is read and validated like a runner.py metrics file.
Trials are ranked by the chosen metric (max: highest first, min: lowest
first); ties keep manifest order.  Hyperparameter columns follow
hyperparam_names, then any other hyperparameter keys, sorted.  Metric columns
are the chosen metric, then the other metric names, sorted.  Numbers are
written with repr().  All outputs are written atomically; on any error none is
written and one ``databazel: error: <target>: ...`` line is printed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
from typing import Any

from runner import RunnerError, error_line, parse_metrics, remove_path, write_atomic


@dataclasses.dataclass(frozen=True)
class Trial:
    """One evaluated trial of the search."""

    name: str
    label: str
    hyperparams: dict[str, str]
    metrics: dict[str, float | int]
    model: str

    def to_json(self, rank: int) -> dict[str, Any]:
        return {
            "rank": rank,
            "name": self.name,
            "label": self.label,
            "hyperparams": self.hyperparams,
            "metrics": self.metrics,
            "model": self.model,
        }


def _is_str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def load_manifest(path: str) -> tuple[list[str], list[Trial]]:
    """Read the manifest and every trial's metrics file."""
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise RunnerError(f"cannot read manifest {path}: {e}") from None
    names = manifest.get("hyperparam_names") if isinstance(manifest, dict) else None
    entries = manifest.get("trials") if isinstance(manifest, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RunnerError(
            f"manifest {path}: hyperparam_names must be a list of strings"
        )
    if not isinstance(entries, list):
        raise RunnerError(f"manifest {path}: trials must be a list")
    if not entries:
        raise RunnerError(f"manifest {path} lists no trials; the search is empty")
    trials = []
    for index, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and all(
                isinstance(entry.get(k), str)
                for k in ("name", "label", "metrics", "model")
            )
            and _is_str_dict(entry.get("hyperparams"))
        ):
            raise RunnerError(
                f"manifest {path}: trial #{index} needs string fields name, label, "
                "metrics, model and an object of strings hyperparams"
            )
        try:
            with open(entry["metrics"], encoding="utf-8") as f:
                metrics = parse_metrics(f.read())
        except (OSError, UnicodeDecodeError, RunnerError) as e:
            raise RunnerError(
                f"cannot read the metrics of trial {entry['name']} "
                f"from {entry['metrics']}: {e}"
            ) from None
        trials.append(
            Trial(
                entry["name"],
                entry["label"],
                entry["hyperparams"],
                metrics,
                entry["model"],
            )
        )
    return names, trials


def rank(trials: list[Trial], metric: str, mode: str) -> list[Trial]:
    """Return the trials best first; ties keep their order (stable sort)."""
    if mode not in ("max", "min"):
        raise RunnerError(f'mode must be "max" or "min", got {json.dumps(mode)}')
    for trial in trials:
        if metric not in trial.metrics:
            raise RunnerError(
                f"trial {trial.name} has no metric {json.dumps(metric)}; "
                f"its metrics are: {', '.join(sorted(trial.metrics))}"
            )
    return sorted(trials, key=lambda t: t.metrics[metric], reverse=mode == "max")


def columns(
    names: list[str], trials: list[Trial], metric: str
) -> tuple[list[str], list[str]]:
    """The hyperparameter columns and the metric columns, in table order."""
    extra_hp = {k for t in trials for k in t.hyperparams if k not in names}
    other_metrics = {k for t in trials for k in t.metrics if k != metric}
    return list(names) + sorted(extra_hp), [metric] + sorted(other_metrics)


def table(
    ranked: list[Trial], hp_columns: list[str], metric_columns: list[str]
) -> list[list[str]]:
    """Header row plus one row per trial, best first, as strings."""
    rows = [["rank", "name"] + hp_columns + metric_columns]
    for position, trial in enumerate(ranked, start=1):
        rows.append(
            [str(position), trial.name]
            + [trial.hyperparams.get(k, "") for k in hp_columns]
            + [
                repr(trial.metrics[k]) if k in trial.metrics else ""
                for k in metric_columns
            ]
        )
    return rows


def render_json(target: str, metric: str, mode: str, ranked: list[Trial]) -> str:
    trials = [trial.to_json(position) for position, trial in enumerate(ranked, start=1)]
    report = {
        "search": target,
        "metric": metric,
        "mode": mode,
        "trials": trials,
        "best": trials[0],
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


def _cell(text: str) -> str:
    return " ".join(text.splitlines()).replace("|", "\\|")


def render_markdown(
    target: str, metric: str, mode: str, ranked: list[Trial], rows: list[list[str]]
) -> str:
    best = ranked[0]
    direction = "higher is better" if mode == "max" else "lower is better"
    summary = (
        f"Ranked by {_cell(metric)} ({mode}, {direction}). "
        f"Best trial: {_cell(best.name)} with {_cell(metric)} = "
        f"{best.metrics[metric]!r} (model: {_cell(best.model)})."
    )
    lines = [
        f"# Hyperparameter search {_cell(target)}",
        "",
        summary,
        "",
        "| " + " | ".join(_cell(c) for c in rows[0]) + " |",
        "|" + "|".join(" --- " for _ in rows[0]) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


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
    ):
        parser.add_argument(flag, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outputs: list[str] = [args.json_output, args.csv_output, args.markdown_output]
    try:
        names, trials = load_manifest(args.manifest)
        ranked = rank(trials, args.metric, args.mode)
        hp_columns, metric_columns = columns(names, trials, args.metric)
        rows = table(ranked, hp_columns, metric_columns)
        texts = [
            render_json(args.target, args.metric, args.mode, ranked),
            render_csv(rows),
            render_markdown(args.target, args.metric, args.mode, ranked, rows),
        ]
        for path, text in zip(outputs, texts):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            write_atomic(path, text)
        return 0
    except (RunnerError, OSError) as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - any failure is one error, never a traceback
        message = f"internal error in the databazel report: {type(e).__name__}: {e}"
    for path in outputs:
        remove_path(path)
    print(error_line(args.target, message), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
