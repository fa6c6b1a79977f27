"""Log a search to an MLflow tracking store: `bazel run //pkg:search.mlflow`.

The launcher of a `search_mlflow` target calls this file as::

    python3 -I -S tool.py mlflow_export --target //pkg:search.mlflow \\
        --manifest M.json [--pythonpath DIR ...] \\
        [--tracking-uri URI] [--experiment NAME]

The last two are the user's (after ``--`` on the ``bazel run`` line).
M.json, written by the rule, names the search and the files of its runfiles::

    {"search": "//pkg:search", "report": "pkg/search.json",
     "best_card": "pkg/search.best.card.json", "html": "pkg/search.html" or null,
     "cards": {"//pkg:search__x-1": "pkg/search__x-1__eval.card.json", ...}}

``--pythonpath`` directories (MLflow's client and its dependencies, from the
target's `deps`) are added with `site.addsitedir`; the interpreter runs
isolated (``-I -S``), so nothing else of the environment reaches it.

The search becomes one parent run (named after the search) with one child
run per trial, in the search's order: the trial's hyperparameters as params,
its metrics (each evaluated epoch's metrics as steps, step = epoch; a trial
trained in one step logs step 0), its status (ok: FINISHED, stopped by early
stopping: KILLED, failed: FAILED), tags naming its Bazel target, the search and
its model's sha256 (``databazel.*``), and its lineage card as the artifact
``lineage_card.json``. The parent has the best trial's metrics and tags, and
the report (and the HTML report, when the search has one) as artifacts.

Exporting the same build twice logs nothing twice: the parent run carries
the sha256 of the report (``databazel.report_sha256``) and is looked up by it;
a finished export is left alone, and an interrupted one is completed (a
trial's run that was not finished is deleted and logged again). A different
build of the search (any trial's result changed, or a trial was added) is a
new parent run. The tracking URI defaults to $MLFLOW_TRACKING_URI, the
experiment to the search's label; relative paths (``sqlite:///mlflow.db``)
are relative to the directory `bazel run` was started in. Everything is
checked before anything is logged. Exit status 0; 2 for a bad command line or
a report MLflow cannot hold; 1 when MLflow fails (one
``databazel: error: <target>: ...`` line).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import site
import sys
import time
from typing import Any


from contract import RunnerError, error_line, read_text

TAG = "databazel."
COMPLETE_TAG = TAG + "export_complete"
STATUS = {"ok": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
CARD_ARTIFACT = "lineage_card.json"
# MLflow's limits (mlflow/utils/validation.py) and what its names may hold.
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
_NAME = re.compile(r"^[\w\-. :/]+$")


@dataclasses.dataclass
class RunSpec:
    """What one MLflow run gets."""

    key: str  # the trial's label (children) or the report's sha256 (the parent)
    name: str
    status: str  # an MLflow run status
    tags: dict[str, str]
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    # metric -> [(step, value)], in step order
    metrics: dict[str, list[tuple[int, float]]] = dataclasses.field(
        default_factory=dict
    )
    texts: dict[str, str] = dataclasses.field(default_factory=dict)  # artifacts
    files: list[str] = dataclasses.field(default_factory=list)  # artifacts


@dataclasses.dataclass
class Export:
    search: str
    report_sha256: str
    parent: RunSpec
    children: list[RunSpec]


def _steps(trial: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Each metric's values by epoch; a trial without epochs has its metrics at step 0."""
    history: dict[str, list[tuple[int, float]]] = {}
    last = 0
    for point in trial.get("learning_curve", []):
        last = max(last, point["epoch"])
        for name, value in point["metrics"].items():
            history.setdefault(name, []).append((point["epoch"], value))
    for name, value in trial["metrics"].items():
        steps = history.setdefault(name, [])
        if not steps or steps[-1][1] != value:
            steps.append((last, value))
    return {name: history[name] for name in sorted(history)}


def _trial_tags(
    search: str, trial: dict[str, Any], card: dict[str, Any]
) -> dict[str, str]:
    tags = {
        TAG + "search": search,
        TAG + "target": trial["label"],
        TAG + "status": trial["status"],
        TAG + "rank": str(trial["rank"]),
        TAG + "model": trial["model"],
        TAG + "model_sha256": card["model"]["sha256"],
    }
    for field in ("number", "round", "bracket", "rung", "epochs"):
        if trial.get(field) is not None:
            tags[TAG + field] = str(trial[field])
    evaluation = card.get("evaluation") or {}
    if evaluation.get("label"):
        tags[TAG + "evaluation"] = evaluation["label"]
    failure = trial.get("failure")
    if failure:
        tags[TAG + "failure"] = (
            f"{failure['stage']} of {failure['target']}: "
            + (failure["error"].splitlines() or [""])[0]
        )
    return tags


def plan(manifest: dict[str, Any], report_text: str, read: Any = read_text) -> Export:
    """The runs to log for a search, from its manifest and report; nothing is logged."""
    report = json.loads(report_text)
    search = manifest["search"]
    digest = hashlib.sha256(report_text.encode("utf-8")).hexdigest()
    children = []
    for trial in sorted(report["trials"], key=lambda t: t.get("number", t["rank"])):
        card_path = manifest["cards"].get(trial["label"])
        if card_path is None:
            raise RunnerError(f"the manifest has no lineage card of {trial['label']}")
        card_text = read(card_path)
        card = json.loads(card_text)
        children.append(
            RunSpec(
                key=trial["label"],
                name=trial["name"],
                status=STATUS[trial["status"]],
                tags=_trial_tags(search, trial, card),
                params=dict(sorted(trial["hyperparams"].items())),
                metrics=_steps(trial),
                texts={CARD_ARTIFACT: card_text},
            )
        )
    best = report["best"]
    parent = RunSpec(
        key=digest,
        name=search.rpartition(":")[2] or search,
        status="FINISHED",
        tags={
            TAG + "search": search,
            TAG + "report_sha256": digest,
            TAG + "metric": report["metric"],
            TAG + "mode": report["mode"],
            TAG + "best": best["name"],
            TAG + "best_target": best["label"],
            TAG + "trials": str(len(report["trials"])),
            TAG + "failed": str(report.get("failed", 0)),
            TAG + "stopped": str(report.get("stopped", 0)),
        },
        metrics={k: [(0, v)] for k, v in sorted(best["metrics"].items())},
        texts={
            os.path.basename(manifest["report"]): report_text,
            CARD_ARTIFACT: read(manifest["best_card"]),
        },
        files=[manifest["html"]] if manifest.get("html") else [],
    )
    export = Export(search, digest, parent, children)
    check(export)
    return export


def check(export: Export) -> None:
    """Fails, naming the run and what to change, on what MLflow would refuse."""
    for run in [export.parent, *export.children]:
        where = f"trial {run.name}" if run is not export.parent else "the search"
        for kind, names in (("hyperparameter", run.params), ("metric", run.metrics)):
            for name in names:
                if len(name) > MAX_KEY or not _NAME.match(name):
                    raise RunnerError(
                        f"{where} has the {kind} name {json.dumps(name)}, which MLflow "
                        f"cannot hold: names of at most {MAX_KEY} characters of letters, "
                        "digits, `_`, `-`, `.`, ` `, `:` and `/`; rename it"
                    )
        for name, value in run.params.items():
            if len(value) > MAX_PARAM_VALUE:
                raise RunnerError(
                    f"{where} has hyperparameter {name} of {len(value)} characters; "
                    f"MLflow holds at most {MAX_PARAM_VALUE}"
                )
        for name, value in run.tags.items():
            if len(value) > MAX_TAG_VALUE:
                run.tags[name] = value[: MAX_TAG_VALUE - 3] + "..."


# ---------------------------------------------------------------------------
# MLflow


def _quote(value: str) -> str:
    """A value for an MLflow filter string; only hex and ids are ever quoted."""
    if not re.fullmatch(r"[0-9A-Za-z_-]+", value):
        raise RunnerError(f"internal error: cannot quote {value!r} in a filter")
    return f"'{value}'"


def _search_runs(client: Any, experiment_id: str, query: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=query, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment(client: Any, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location)
    if experiment.lifecycle_stage != "active":
        raise RunnerError(
            f"the MLflow experiment {json.dumps(name)} is deleted; restore it "
            "(mlflow experiments restore) or choose another with --experiment"
        )
    return experiment.experiment_id


def _fill(client: Any, run_id: str, spec: RunSpec, now: int, skip: Any = ()) -> None:
    """Logs the params, metrics (but those in `skip`) and artifacts of `spec`."""
    from mlflow.entities import Metric, Param

    params = [Param(k, v) for k, v in spec.params.items()]
    metrics = [
        Metric(name, float(value), now, step)
        for name, steps in spec.metrics.items()
        if name not in skip
        for step, value in steps
    ]
    for start in range(0, len(params), MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=params[start : start + MAX_BATCH_PARAMS])
    for start in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH_METRICS])
    for name, text in spec.texts.items():
        client.log_text(run_id, text, name)
    for path in spec.files:
        client.log_artifact(run_id, path)


def _finish(client: Any, run_id: str, status: str, now: int) -> None:
    """Marks a run as completely logged, then ends it."""
    client.set_tag(run_id, COMPLETE_TAG, "true")
    client.set_terminated(run_id, status=status, end_time=now)


def _start(
    client: Any, experiment_id: str, spec: RunSpec, now: int, parent: str | None
) -> str:
    tags = dict(spec.tags, **({"mlflow.parentRunId": parent} if parent else {}))
    run = client.create_run(
        experiment_id, start_time=now, tags=tags, run_name=spec.name
    )
    return str(run.info.run_id)


def export(
    client: Any, plan_: Export, experiment: str, artifact_location: str | None = None
) -> tuple[str, str, int, bool]:
    """Logs what is not logged yet; (experiment id, parent run id, runs logged, was complete).

    A new experiment keeps its artifacts at `artifact_location` (default: the
    store's, which for a file or SQLite store is ./mlruns where `bazel run` started)."""
    now = int(time.time() * 1000)
    experiment_id = _experiment(client, experiment, artifact_location)
    found = _search_runs(
        client,
        experiment_id,
        f"tags.`{TAG}report_sha256` = {_quote(plan_.report_sha256)}",
    )
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    complete = [r for r in parents if r.data.tags.get(COMPLETE_TAG) == "true"]
    if complete:
        return experiment_id, complete[0].info.run_id, 0, True
    logged = 0
    if parents:  # an interrupted export of this report: complete it
        parent_id = parents[0].info.run_id
        already = set(parents[0].data.metrics)
    else:
        parent_id, already = (
            _start(client, experiment_id, plan_.parent, now, None),
            set(),
        )
    done = set()
    for run in _search_runs(
        client, experiment_id, f"tags.`mlflow.parentRunId` = {_quote(parent_id)}"
    ):
        if run.data.tags.get(COMPLETE_TAG) == "true":
            done.add(run.data.tags.get(TAG + "target"))
        else:
            client.delete_run(run.info.run_id)  # interrupted: logged again below
    for child in plan_.children:
        if child.key not in done:
            run_id = _start(client, experiment_id, child, now, parent_id)
            _fill(client, run_id, child, now)
            _finish(client, run_id, child.status, now)
            logged += 1
    _fill(client, parent_id, plan_.parent, now, skip=already)
    _finish(client, parent_id, plan_.parent.status, now)
    return experiment_id, parent_id, logged, False


def _location(given: str | None) -> str | None:
    """A plain directory is made absolute (against where `bazel run` started)."""
    if not given or "://" in given:
        return given
    return os.path.abspath(given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bazel run //pkg:search.mlflow --",
        description="Log the search to an MLflow tracking store: a parent run, "
        "one child run per trial. Running it again logs nothing twice.",
    )
    parser.add_argument("--target", required=True, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", required=True, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pythonpath", action="append", default=[], help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="the tracking store: sqlite:///mlflow.db, http://127.0.0.1:5000, ... "
        "(default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--experiment", help="the MLflow experiment (default: the search's label)"
    )
    parser.add_argument(
        "--artifact-location",
        help="where a new experiment keeps its artifacts: a directory or a URI "
        "(default: the tracking store's; ./mlruns for a file or SQLite store)",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.tracking_uri:
        parser.error("give --tracking-uri URI (or set MLFLOW_TRACKING_URI)")
    try:
        # Paths are relative to the runfiles (the current directory, which the
        # launcher sets); the directory `bazel run` started in comes next.
        manifest = json.loads(read_text(args.manifest))
        for key in ("report", "best_card", "html"):
            if manifest.get(key):
                manifest[key] = os.path.abspath(manifest[key])
        manifest["cards"] = {
            label: os.path.abspath(path) for label, path in manifest["cards"].items()
        }
        planned = plan(manifest, read_text(manifest["report"]))
    except RunnerError as e:
        print(error_line(args.target, str(e)), file=sys.stderr)
        return 2
    for directory in args.pythonpath:
        site.addsitedir(os.path.abspath(directory))
    os.chdir(os.environ.get("BUILD_WORKING_DIRECTORY") or os.getcwd())
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    try:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    except ImportError as e:
        print(
            error_line(
                args.target,
                f"cannot import MLflow's client ({e}); give the search "
                '`mlflow_deps = ["@<env>//:mlflow-skinny"]` from a Python environment '
                "whose lock file has mlflow-skinny (or mlflow)",
            ),
            file=sys.stderr,
        )
        return 2
    experiment = args.experiment or planned.search
    try:
        client = MlflowClient(tracking_uri=args.tracking_uri)
        experiment_id, parent_id, logged, was_complete = export(
            client, planned, experiment, _location(args.artifact_location)
        )
    except RunnerError as e:
        print(error_line(args.target, str(e)), file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - MLflow's errors, one line
        first = (str(e).splitlines() or [""])[0]
        print(
            error_line(
                args.target,
                f"MLflow at {args.tracking_uri} failed: {type(e).__name__}: {first}",
            ),
            file=sys.stderr,
        )
        return 1
    where = (
        f"{args.tracking_uri}, experiment {json.dumps(experiment)} (id {experiment_id})"
    )
    trials = len(planned.children)
    if was_complete:
        print(
            f"{planned.search} is already in {where}: run {parent_id} with {trials} "
            "trial runs; nothing logged"
        )
    else:
        print(
            f"logged {planned.search} to {where}: run {parent_id} with {trials} "
            f"trial runs ({logged} runs logged now)"
        )
    return 0
