"""The checker behind `metrics_test`: fails when a metric is past its bar.

Usage (written by the rule into the test's launcher)::

    tool.py gate --target //pkg:gate --subject //pkg:eval --metrics-file PATH \\
                 [--search] [--at-least NAME=NUMBER ...] [--at-most NAME=NUMBER ...]

PATH is an `evaluate` target's metrics file or, with ``--search``, a search
report's JSON (the best trial's metrics are checked). Every bar is checked and
reported, one line each, with the metric and the bar to 4 significant digits
(more where they would print alike but differ: display.py). The exit status
is 1 if any metric is past its bar, missing, or if the evaluation recorded a
failure instead of metrics, and 0 otherwise. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass


from contract import RunnerError
from display import format_column
from records import parse_evaluation

BOUNDS = {"at_least": "below", "at_most": "above"}


@dataclass(frozen=True)
class Bar:
    metric: str
    bound: str  # a key of BOUNDS
    value: float


def parse_bar(bound: str, text: str) -> Bar:
    """`NAME=NUMBER` as a Bar."""
    metric, sep, number = text.rpartition("=")
    if not sep or not metric:
        raise RunnerError(f"{bound} needs NAME=NUMBER, got {json.dumps(text)}")
    try:
        value = float(number)
    except ValueError:
        raise RunnerError(
            f"{bound}[{json.dumps(metric)}] is not a number: {json.dumps(number)}"
        ) from None
    if not math.isfinite(value):
        raise RunnerError(f"{bound}[{json.dumps(metric)}] must be finite, got {number}")
    return Bar(metric, bound, value)


def _describe_failure(failure: dict[str, object]) -> str:
    error = str(failure.get("error") or "").splitlines()
    return (
        f"recorded a failure instead of metrics: {failure.get('stage')} of "
        f"{failure.get('target')} failed: {error[0] if error else '(no message)'}"
    )


def load_subject(path: str, search: bool) -> tuple[str, dict[str, float | int], str]:
    """(description of what is checked, its metrics, failure text or "")."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not search:
        evaluation = parse_evaluation(text)
        stop, failure = evaluation["stop"], evaluation["failure"]
        if stop is not None:
            return (
                "",
                {},
                f"holds no metrics: early stopping stopped the trial after epoch "
                f"{stop['epoch']} ({stop['rung']})",
            )
        return (
            "",
            evaluation["metrics"],
            _describe_failure(dict(failure)) if failure else "",
        )
    best = json.loads(text)["best"]
    where = f" (best trial {best['label']})"
    if best.get("status") == "failed":
        return where, {}, "its best trial failed"
    return where, best["metrics"], ""


def check(metrics: dict[str, float | int], bars: list[Bar]) -> list[tuple[bool, str]]:
    """(passed, line) for each bar."""
    results = []
    for bar in bars:
        if bar.metric not in metrics:
            known = ", ".join(sorted(metrics)) or "none"
            results.append(
                (False, f"no metric {json.dumps(bar.metric)} (it has: {known})")
            )
            continue
        value = metrics[bar.metric]
        passed = value >= bar.value if bar.bound == "at_least" else value <= bar.value
        verdict = "ok" if passed else BOUNDS[bar.bound] + " the bar"
        # 4 significant digits, or the digits that tell the value from the bar.
        shown, bar_shown = format_column([value, bar.value], mark=False)
        results.append(
            (passed, f"{bar.metric} = {shown}, {verdict}: {bar.bound} {bar_shown}")
        )
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gate.py", description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--metrics-file", required=True)
    parser.add_argument("--search", action="store_true")
    for bound in BOUNDS:
        parser.add_argument(
            "--" + bound.replace("_", "-"),
            action="append",
            default=[],
            metavar="NAME=NUMBER",
        )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    head = f"{args.target}: {args.subject}"
    try:
        bars = [parse_bar("at_least", t) for t in args.at_least]
        bars += [parse_bar("at_most", t) for t in args.at_most]
        where, metrics, failure = load_subject(args.metrics_file, args.search)
    except (OSError, ValueError, KeyError, TypeError, RunnerError) as e:
        print(f"FAILED {head}: cannot read {args.metrics_file}: {e}")
        return 1
    if failure:
        print(f"FAILED {head}{where} {failure}")
        return 1
    results = check(metrics, bars)
    for passed, line in results:
        print(f"{'PASSED' if passed else 'FAILED'} {head}{where}: {line}")
    return 0 if all(passed for passed, _ in results) else 1
