"""Write a search's interactive HTML report: the leaderboard and Optuna's plots.

Bazel runs this tool (through tool.py), with the packages of `html_deps` (optuna and plotly) on
PYTHONPATH, as::

    python3 tool.py html_report --target //pkg:search --report R.json --output R.html

R.json is report.py's JSON report. The trials become an in-memory Optuna
study (``create_trial`` + ``add_trial``, as suggest.py builds one), in the
search's order (each trial's ``number``): a trial that trained to the end is
``COMPLETE`` with its metric, one early stopping stopped is ``PRUNED``, a
failed one ``FAIL``; each epoch's metric is an intermediate value. The
hyperparameters that vary across the trials are the study's parameters, with
the distributions plot.py's axes use: numbers (integers when every value is
one) on a log scale when they are positive and span a factor of 100 or more,
other values as categories. ``optuna.visualization`` draws the views, each
only when it has something to show (otherwise the page says why):
optimization history, parallel coordinates, parameter importances (PED-ANOVA,
which needs no scikit-learn), slices, contours over pairs of
hyperparameters, and the intermediate values (learning curves; a stopped
trial's curve, dotted, ends at the epoch it stopped at) when trials were
evaluated every epoch.

The page is one self-contained file: plotly.js is embedded once, so it opens
offline. Its bytes depend only on R.json and the packages' versions: the
plots' element ids are fixed, and nothing records a time. Every text that
comes from the BUILD files or the scripts (the search's label, trial names,
hyperparameter names and values, metric names, error messages) is escaped
for HTML, and handed to Optuna already escaped, so plotly.js shows it as
text too. On any error no page is written and one
``databazel: error: <target>: ...`` line is printed.

One module, past 450 lines, for one job, one page: its sections share the
report's escaping and the Optuna study built from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import os
import re
import warnings
from typing import Any


from contract import RunnerError
from display import TIE_NOTE, any_marked
from outputs import run_tool, write_atomic
from plot import Axis, load_report
from ranking import describe_failure
from report import columns, table

# Hyperparameters the contour plots pair up (the first ones that vary).
MAX_CONTOUR_PARAMS = 3
PLOT_HEIGHT = "480px"
_INTEGER = re.compile(r"[+-]?[0-9]+")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px;
       padding: 0 1em; color: #1f2933; }
h1 { font-size: 1.4em; word-break: break-all; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #d9dee5; }
table { border-collapse: collapse; font-size: 0.85em; display: block; overflow-x: auto; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e7eb; text-align: left;
         white-space: nowrap; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eef6ee; }
.status { font-weight: 600; }
.status-ok { color: #1b7f3b; }
.status-stopped { color: #a05a00; }
.status-failed { color: #c0262d; }
.note { color: #52606d; font-size: 0.9em; }
pre { background: #f5f7fa; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
footer { margin-top: 3em; color: #7b8794; font-size: 0.8em; }
"""


@dataclasses.dataclass
class View:
    """One section of the page: a plot, or why it is not drawn."""

    key: str
    title: str
    figure: Any = None
    notes: list[str] = dataclasses.field(default_factory=list)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


@dataclasses.dataclass(frozen=True)
class Param:
    """A hyperparameter of the study: its distribution and how its values map to Optuna's."""

    name: str  # escaped for HTML
    axis: Axis
    integer: bool

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if not self.axis.numeric:
            return CategoricalDistribution([_e(c) for c in self.axis.categories])
        low, high = float(self.axis.categories[0]), float(self.axis.categories[-1])
        if self.integer:
            return IntDistribution(int(low), int(high), log=self.axis.log)
        return FloatDistribution(low, high, log=self.axis.log)

    def value(self, text: str) -> Any:
        if not self.axis.numeric:
            return _e(text)
        return int(text) if self.integer else float(text)


def study_params(report: dict[str, Any]) -> tuple[list[Param], dict[str, str]]:
    """The hyperparameters that vary (search order first), and those every trial shares."""
    trials = report["trials"]
    names = list(report.get("hyperparam_names", []))
    names += sorted({k for t in trials for k in t["hyperparams"]} - set(names))
    params, fixed = [], {}
    for name in names:
        values = [t["hyperparams"][name] for t in trials if name in t["hyperparams"]]
        if len(set(values)) < 2:
            if len(values) == len(trials):
                fixed[name] = values[0]
            continue
        axis = Axis(name, values)
        integer = axis.numeric and all(_INTEGER.fullmatch(v.strip()) for v in values)
        params.append(Param(_e(name), axis, integer))
    return params, fixed


def build_study(report: dict[str, Any], params: list[Param]) -> Any:
    """The search as an in-memory Optuna study, trials in the search's order."""
    import optuna
    from optuna.trial import TrialState, create_trial

    metric = report["metric"]
    study = optuna.create_study(
        direction="maximize" if report["mode"] == "max" else "minimize"
    )
    ordered = sorted(
        enumerate(report["trials"]), key=lambda p: (p[1].get("number", p[0]), p[0])
    )
    for _, trial in ordered:
        present = [p for p in params if p.axis.name in trial["hyperparams"]]
        status = trial["status"]
        state = {
            "ok": TrialState.COMPLETE,
            "stopped": TrialState.PRUNED,
        }.get(status, TrialState.FAIL)
        study.add_trial(
            create_trial(
                state=state,
                value=trial["metrics"][metric]
                if state == TrialState.COMPLETE
                else None,
                params={
                    p.name: p.value(trial["hyperparams"][p.axis.name]) for p in present
                },
                distributions={p.name: p.distribution() for p in present},
                intermediate_values={
                    point["epoch"]: point["metrics"][metric]
                    for point in trial.get("learning_curve", [])
                    if metric in point["metrics"]
                },
            )
        )
    return study


def _draw(view: View, plot: Any) -> View:
    """Calls `plot()`, keeping Optuna's warnings as notes of the view."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        view.figure = plot()
    view.notes += sorted({_e(str(w.message)) for w in caught})
    return view


def draw_views(report: dict[str, Any], study: Any, params: list[Param]) -> list[View]:
    """Every view of the page, drawn or with the reason it is not."""
    from optuna import visualization as vis
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import TrialState

    target = _e(report["metric"])
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = sum(1 for t in trials if t.state == TrialState.PRUNED)
    failed = sum(1 for t in trials if t.state == TrialState.FAIL)
    left_out = []
    if pruned:
        left_out.append(f"{pruned} stopped early")
    if failed:
        left_out.append(f"{failed} failed")
    finished_only = (
        [
            f"Shows the {len(complete)} trials that trained to the end; "
            f"{' and '.join(left_out)} are left out."
        ]
        if left_out
        else []
    )
    names = [p.name for p in params]
    views = []

    history = View("history", "Optimization history", notes=list(finished_only))
    views.append(
        _draw(history, lambda: vis.plot_optimization_history(study, target_name=target))
        if complete
        else dataclasses.replace(history, notes=["No trial trained to the end."])
    )
    needs = None
    if not params:
        needs = "No hyperparameter takes two values in this search."
    elif not complete:
        needs = "No trial trained to the end."
    parallel = View("parallel", "Parallel coordinates", notes=list(finished_only))
    importance = View("importance", "Hyperparameter importance")
    slices = View("slice", "Slices: the metric against each hyperparameter")
    contour = View("contour", "Contours over pairs of hyperparameters")
    if needs:
        for view in (parallel, importance, slices):
            view.notes = [needs]
        views += [parallel, importance, slices]
    else:
        views.append(
            _draw(
                parallel,
                lambda: vis.plot_parallel_coordinate(
                    study, params=names, target_name=target
                ),
            )
        )
        importance.notes.append(
            "PED-ANOVA: how much each hyperparameter matters for reaching the best "
            "10% of the trials."
        )
        if len(complete) < 2:
            importance.notes = ["Needs two trials that trained to the end."]
            views.append(importance)
        else:
            views.append(
                _draw(
                    importance,
                    lambda: vis.plot_param_importances(
                        study,
                        evaluator=PedAnovaImportanceEvaluator(),
                        params=names,
                        target_name=target,
                    ),
                )
            )
        views.append(
            _draw(
                slices, lambda: vis.plot_slice(study, params=names, target_name=target)
            )
        )
    if len(params) >= 2 and len(complete) >= 2:
        pairs = names[:MAX_CONTOUR_PARAMS]
        views.append(
            _draw(
                contour,
                lambda: vis.plot_contour(study, params=pairs, target_name=target),
            )
        )
        if len(names) > MAX_CONTOUR_PARAMS:
            contour.notes.append(
                f"Over the first {MAX_CONTOUR_PARAMS} of the {len(names)} hyperparameters."
            )
    else:
        contour.notes = [
            "Needs two hyperparameters that vary and two trials that "
            "trained to the end."
        ]
        views.append(contour)
    if any(t.intermediate_values for t in trials):
        curves = _draw(
            View(
                "curves",
                "Learning curves: the metric after each epoch",
                notes=[
                    "Each trial's metric at every evaluated epoch (Optuna's "
                    "intermediate values); the curves of trials that early "
                    "stopping stopped are dotted and end at the epoch they "
                    "stopped at. Hover a curve for its trial's number (#)."
                ]
                if pruned
                else [
                    "Each trial's metric at every evaluated epoch (Optuna's "
                    "intermediate values)."
                ],
            ),
            lambda: vis.plot_intermediate_values(study),
        )
        _label_curves(curves.figure, study, target)
        views.append(curves)
    return views


def _label_curves(figure: Any, study: Any, target: str) -> None:
    """Axis titles of the learning curves, and stopped trials' curves dotted."""
    from optuna.trial import TrialState

    states = {f"Trial{t.number}": t.state for t in study.get_trials(deepcopy=False)}
    figure.update_layout(xaxis_title="epoch", yaxis_title=target)
    for trace in figure.data:
        if states.get(trace.name) == TrialState.PRUNED:
            trace.line.dash = "dot"


def _readable_table(report: dict[str, Any]) -> tuple[list[list[str]], int]:
    """The leaderboard's rows as the text leaderboard has them, and where the metrics start."""
    trials = report["trials"]
    names = list(report.get("hyperparam_names", []))
    hp_columns, metric_columns = columns(names, trials, report["metric"])
    rows = table(trials, hp_columns, metric_columns, readable=True)
    return rows, len(rows[0]) - len(metric_columns)


def _leaderboard(
    report: dict[str, Any], rows: list[list[str]], first_metric: int
) -> list[str]:
    """The leaderboard as an HTML table, with each trial's number (#) after its rank."""
    status = rows[0].index("status")
    head = rows[0][:1] + ["#"] + rows[0][1:]
    lines = [
        "<table>",
        "<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr></thead>",
        "<tbody>",
    ]
    for trial, row in zip(report["trials"], rows[1:]):
        cells = []
        for index, cell in enumerate(row):
            if index == status:
                cells.append(f'<td class="status status-{_e(cell)}">{_e(cell)}</td>')
            elif index >= first_metric or index == 0:
                cells.append(f'<td class="number">{_e(cell)}</td>')
            else:
                cells.append(f"<td>{_e(cell)}</td>")
        cells.insert(1, f'<td class="number">{_e(trial.get("number", ""))}</td>')
        best = ' class="best"' if trial["name"] == report["best"]["name"] else ""
        lines.append(f"<tr{best}>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    if any_marked([c for row in rows[1:] for c in row[first_metric:]]):
        lines.append(f'<p class="note">{_e(TIE_NOTE)}.</p>')
    return lines


def _summary(
    report: dict[str, Any], best_value: str, fixed: dict[str, str]
) -> list[str]:
    trials = report["trials"]
    metric, mode, best = report["metric"], report["mode"], report["best"]
    direction = "higher is better" if mode == "max" else "lower is better"
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [
        f"<p>Ranked by <b>{_e(metric)}</b> ({_e(mode)}, {direction}). Best trial: "
        f"<b>{_e(best['name'])}</b> with {_e(metric)} = {_e(best_value)}, "
        f"model <code>{_e(best['model'])}</code>.</p>",
        f"<p>{len(trials)} trials: {_e(tally)}.</p>",
    ]
    if fixed:
        shared = ", ".join(f"{k} = {v}" for k, v in sorted(fixed.items()))
        lines.append(f'<p class="note">Every trial has {_e(shared)}.</p>')
    return lines


def _failures(report: dict[str, Any]) -> list[str]:
    failed = [t for t in report["trials"] if t.get("failure")]
    if not failed:
        return []
    lines = ['<h2 id="failed">Failed trials</h2>']
    for trial in failed:
        failure = trial["failure"]
        lines += [
            f"<h3>{_e(trial['rank'])}. {_e(trial['name'])}</h3>",
            f"<p>{_e(describe_failure(failure))} ({_e(failure['target'])}).</p>",
            f"<pre>{_e(failure['error'])}</pre>",
        ]
        tail = "\n".join(failure["stderr_tail"].splitlines()[-10:])
        if tail:
            lines += ["<p>Last lines of its stderr:</p>", f"<pre>{_e(tail)}</pre>"]
    return lines


def render_page(report: dict[str, Any]) -> str:
    """The whole page."""
    import optuna
    import plotly
    import plotly.io as pio
    import plotly.offline

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    params, fixed = study_params(report)
    study = build_study(report, params)
    views = draw_views(report, study, params)
    rows, first_metric = _readable_table(report)
    search = _e(report["search"])
    body = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{search}: hyperparameter search</title>",
        f"<style>{STYLE}</style>",
        # plotly.js, once for every plot: the page needs no network.
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>',
        "</head>",
        "<body>",
        f"<h1>Hyperparameter search {search}</h1>",
        *_summary(report, rows[1][first_metric], fixed),
        '<h2 id="leaderboard">Leaderboard</h2>',
        *_leaderboard(report, rows, first_metric),
    ]
    for view in views:
        body.append(f'<h2 id="{view.key}">{_e(view.title)}</h2>')
        body += [f'<p class="note">{note}</p>' for note in view.notes]
        if view.figure is not None:
            view.figure.update_layout(title_text="")  # the section's heading says it
            body.append(
                pio.to_html(
                    view.figure,
                    include_plotlyjs=False,
                    full_html=False,
                    div_id=f"plot-{view.key}",
                    default_height=PLOT_HEIGHT,
                    config={"displaylogo": False, "responsive": True},
                    validate=True,
                )
            )
    body += [
        *_failures(report),
        f"<footer>Written by databazel from {search}'s JSON report; drawn by "
        f"Optuna {_e(optuna.__version__)} (optuna.visualization) with plotly "
        f"{_e(plotly.__version__)} and plotly.js "
        f"{_e(plotly.offline.get_plotlyjs_version())}, embedded.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(body) + "\n"


def import_packages() -> None:
    """Fails with what to do when optuna or plotly cannot be imported."""
    try:
        import optuna  # noqa: F401
        import plotly  # noqa: F401
    except ImportError as e:
        raise RunnerError(
            f"plots = True writes an HTML report drawn by Optuna with plotly ({e}); "
            'give the search `html_deps = [requirement("optuna"), '
            'requirement("plotly")]` from a Python environment whose lock file has '
            "both, or set plots = False"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="html_report.py", description="databazel interactive search report"
    )
    for flag in ("--target", "--report", "--output"):
        parser.add_argument(flag, required=True)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)

    def work() -> None:
        report = load_report(args.report)
        import_packages()
        page = render_page(report)
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        write_atomic(args.output, page)

    return run_tool(args.target, "HTML report", [args.output], work)
