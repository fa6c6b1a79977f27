"""What `bazel run` on a search prints: its leaderboard, or what changed.

The search's launcher calls this file as::

    python3 tool.py leaderboard --target //pkg:search --report R.json \\
        --leaderboard R.txt [--against OTHER.json [--markdown]]

Without ``--against`` it prints the leaderboard (R.txt). With ``--against
OTHER.json``, another build's report of the search (the main branch's, saved
by CI, say), it prints how the search moved, like ``dvc metrics diff``: the
best trial before and after (and whether it changed) with its metrics, a
count of added, removed, changed and unchanged trials, then one row per
difference: a trial added or removed (with its ranking metric, or its status
if it failed), a changed status, a changed hyperparameter value (trials are
matched by name; a suggested round's trial keeps its name when its values
change), a metric that moved, with before, after and the change. Numbers
read as in the leaderboard (display.py); equal metrics are unchanged however
they were written. ``--markdown`` prints the same as Markdown, for a review
comment. OTHER.json is read relative to the directory `bazel run` was started
in. Exit status 0, or 2 with one ``databazel: error: <target>: ...`` line
when a report cannot be read. Stdlib only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any


from contract import RunnerError, error_line
from display import (
    format_column,
    format_delta,
    format_number,
    markdown_cell,
)

HEADER = ("trial", "change", "what", "before", "after", "delta")


@dataclasses.dataclass(frozen=True)
class Row:
    """One difference between the two reports."""

    trial: str
    change: str  # "added", "removed" or "changed"
    what: str  # a metric, "status" or "hyperparameter NAME"
    before: Any = None  # a number, a string, or None
    after: Any = None

    def cells(self) -> tuple[str, ...]:
        numbers = [v if _is_number(v) else None for v in (self.before, self.after)]
        shown = format_column(numbers, mark=False)
        before, after = (
            text if _is_number(value) else ("" if value is None else str(value))
            for value, text in zip((self.before, self.after), shown)
        )
        delta = (
            format_delta(self.after - self.before)
            if _is_number(self.before) and _is_number(self.after)
            else ""
        )
        return (self.trial, self.change, self.what, before, after, delta)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What changed from `before` (OTHER.json) to `after` (this build's report)."""

    before: dict[str, Any]
    after: dict[str, Any]
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]
    rows: list[Row]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _trials(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in report["trials"]}


def _headline(report: dict[str, Any], trial: dict[str, Any]) -> tuple[str, Any]:
    """What an added or removed trial shows: its ranking metric, else its status."""
    value = trial["metrics"].get(report["metric"])
    return (
        (report["metric"], value) if value is not None else ("status", trial["status"])
    )


def _differences(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Row]:
    rows = []
    if old["status"] != new["status"]:
        rows.append(Row(name, "changed", "status", old["status"], new["status"]))
    for key in sorted(set(old["hyperparams"]) | set(new["hyperparams"])):
        before, after = old["hyperparams"].get(key), new["hyperparams"].get(key)
        if before != after:
            rows.append(Row(name, "changed", f"hyperparameter {key}", before, after))
    for key in sorted(set(old["metrics"]) | set(new["metrics"])):
        before, after = old["metrics"].get(key), new["metrics"].get(key)
        if before != after:
            rows.append(Row(name, "changed", key, before, after))
    return rows


def compare(after: dict[str, Any], before: dict[str, Any]) -> Comparison:
    """Trial by trial, what changed from report `before` to report `after`."""
    old, new = _trials(before), _trials(after)
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    rows: list[Row] = []
    changed, unchanged = [], []
    for name in added:
        what, value = _headline(after, new[name])
        rows.append(Row(name, "added", what, after=value))
    for name in removed:
        what, value = _headline(before, old[name])
        rows.append(Row(name, "removed", what, before=value))
    for name in new:
        if name in old:
            differences = _differences(name, old[name], new[name])
            (changed if differences else unchanged).append(name)
            rows.extend(differences)
    return Comparison(before, after, added, removed, changed, unchanged, rows)


def _best_lines(comparison: Comparison) -> list[str]:
    before, after = comparison.before["best"], comparison.after["best"]
    metric = comparison.after["metric"]
    if before["name"] == after["name"]:
        lines = [f"Best trial: {after['name']}, as before."]
    else:
        lines = [
            f"Best trial: {after['name']} (was {before['name']}): the winner changed."
        ]
    names = [metric] + sorted(set(after["metrics"]) - {metric})
    for name in names:
        old, new = before["metrics"].get(name), after["metrics"].get(name)
        if new is None:
            continue
        if old is None:
            lines.append(f"  {name} = {format_number(new)} (the other best has none)")
            continue
        shown_old, shown_new = format_column([old, new], mark=False)
        delta = "unchanged" if old == new else format_delta(new - old)
        lines.append(f"  {name}: {shown_old} -> {shown_new} ({delta})")
    return lines


def _notes(comparison: Comparison, other: str) -> list[str]:
    before, after = comparison.before, comparison.after
    notes = []
    if before.get("search") != after.get("search"):
        notes.append(f"note: {other} is the report of {before.get('search')}")
    if (before.get("metric"), before.get("mode")) != (after["metric"], after["mode"]):
        notes.append(
            f"note: {other} ranks by {before.get('metric')} ({before.get('mode')})"
        )
    return notes


def _summary(comparison: Comparison) -> str:
    c = comparison
    return (
        f"{len(c.after['trials'])} trials ({len(c.before['trials'])} before): "
        f"{len(c.added)} added, {len(c.removed)} removed, {len(c.changed)} changed, "
        f"{len(c.unchanged)} unchanged."
    )


def render_text(comparison: Comparison, other: str) -> str:
    after = comparison.after
    lines = [
        f"{after['search']} against {other}: ranked by {after['metric']} ({after['mode']})",
        *_notes(comparison, other),
        "",
        *_best_lines(comparison),
        "",
        _summary(comparison),
    ]
    if comparison.rows:
        table = [HEADER, *(row.cells() for row in comparison.rows)]
        widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
        lines.append("")
        for index, row in enumerate(table):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def render_markdown(comparison: Comparison, other: str) -> str:
    after = comparison.after
    lines = [
        f"**{markdown_cell(after['search'])}** against {markdown_cell(other)}: ranked by "
        f"{markdown_cell(after['metric'])} ({after['mode']})",
        "",
        *(f"- {markdown_cell(line.strip())}" for line in _notes(comparison, other)),
        *(f"- {markdown_cell(line.strip())}" for line in _best_lines(comparison)),
        f"- {_summary(comparison)}",
    ]
    if comparison.rows:
        lines += [
            "",
            "| " + " | ".join(HEADER) + " |",
            "|" + "|".join(" --- " for _ in HEADER) + "|",
        ]
        lines += [
            "| " + " | ".join(markdown_cell(c) for c in row.cells()) + " |"
            for row in comparison.rows
        ]
    return "\n".join(lines) + "\n"


def load_report(path: str) -> dict[str, Any]:
    """A search's JSON report, checked for what the comparison reads."""
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunnerError(f"cannot read the report {path}: {e}") from None
    trials = report.get("trials") if isinstance(report, dict) else None
    if not (
        isinstance(trials, list)
        and trials
        and isinstance(report.get("metric"), str)
        and isinstance(report.get("best"), dict)
        and all(
            isinstance(t, dict)
            and isinstance(t.get("name"), str)
            and isinstance(t.get("status"), str)
            and isinstance(t.get("metrics"), dict)
            and isinstance(t.get("hyperparams"), dict)
            for t in trials
        )
    ):
        raise RunnerError(
            f"{path} is not a databazel search report (the <search>.json a "
            "search's build writes): it needs `metric`, `best` and `trials` with "
            "name, status, hyperparams and metrics"
        )
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bazel run //pkg:search --",
        description="Print the search's leaderboard, or with --against what "
        "changed against another build's report.",
    )
    parser.add_argument("--target", required=True, help=argparse.SUPPRESS)
    parser.add_argument("--report", required=True, help=argparse.SUPPRESS)
    parser.add_argument("--leaderboard", required=True, help=argparse.SUPPRESS)
    parser.add_argument(
        "--against",
        metavar="OTHER.json",
        help="another build's <search>.json (relative to where bazel run started)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the comparison as Markdown"
    )
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.markdown and not args.against:
        parser.error("--markdown needs --against OTHER.json")
    try:
        if not args.against:
            with open(args.leaderboard, encoding="utf-8") as f:
                sys.stdout.write(f.read())
            return 0
        here = os.environ.get("BUILD_WORKING_DIRECTORY") or os.getcwd()
        other = load_report(os.path.join(here, args.against))
        comparison = compare(load_report(args.report), other)
        render = render_markdown if args.markdown else render_text
        sys.stdout.write(render(comparison, args.against))
        return 0
    except (RunnerError, OSError) as e:
        print(error_line(args.target, str(e)), file=sys.stderr)
        return 2
