"""The trials of a search: read from the report's manifest, checked, and ranked.

report.py's docstring describes the manifest (MANIFEST.json) and the order of
the ranking; this module reads it into `Trial`s (with where early stopping
left each, `EarlyStopping`, and a failed one's `FailureRecord`), ranks them
and picks the best. The report's files are written by report.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from contract import RunnerError, parse_hyperparams
from records import (
    Evaluation,
    FailureRecord,
    StopRecord,
    parse_evaluation,
)

# Lines of a failed trial's stderr tail shown in the Markdown report and leaderboard.
REPORT_TAIL_LINES = 10


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Where early stopping left a trial."""

    rungs: tuple[int, ...]  # the epochs of its bracket's rungs
    bracket: int | None  # its Hyperband bracket
    epochs: int  # the epochs it trained
    stop: StopRecord | None  # why it stopped, if a rung stopped it

    @property
    def rung(self) -> int:
        """The index of the last rung the trial reached."""
        return max(0, sum(1 for epochs in self.rungs if epochs <= self.epochs) - 1)

    def to_json(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "rung": self.rung, "bracket": self.bracket}


@dataclasses.dataclass(frozen=True)
class Trial:
    """One evaluated trial of the search."""

    name: str
    label: str
    hyperparams: dict[str, str]
    metrics: dict[str, float | int]
    model: str
    model_path: str = ""
    failure: FailureRecord | None = None
    learning_curve: tuple[tuple[int, dict[str, float | int]], ...] = ()
    early_stopping: EarlyStopping | None = None
    round: int | None = None
    number: int = 0  # its position in the manifest (the search's order), 0 first

    @property
    def status(self) -> str:
        if self.failure is not None:
            return "failed"
        return "stopped" if self.early_stopping and self.early_stopping.stop else "ok"

    def to_json(self, rank: int) -> dict[str, Any]:
        extra = self.early_stopping.to_json() if self.early_stopping else {}
        return {
            **extra,
            "rank": rank,
            "number": self.number,
            "name": self.name,
            "label": self.label,
            "hyperparams": self.hyperparams,
            "metrics": self.metrics,
            "model": self.model,
            "status": self.status,
            "failure": self.failure,
            "learning_curve": [
                {"epoch": epoch, "metrics": metrics}
                for epoch, metrics in self.learning_curve
            ],
            **({} if self.round is None else {"round": self.round}),
        }


def describe_failure(failure: FailureRecord) -> str:
    """One line: which step failed and how, e.g. 'train exited with code 3'."""
    if failure["signal"] is not None:
        how = f"was killed by signal {failure['signal']}"
    elif failure["exit_code"] not in (None, 0):
        how = f"exited with code {failure['exit_code']}"
    else:
        how = "failed: " + failure["error"].splitlines()[0]
    return f"{failure['stage']} {how}"


def stderr_tail(failure: FailureRecord) -> str:
    return "\n".join(failure["stderr_tail"].splitlines()[-REPORT_TAIL_LINES:])


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
                for k in ("name", "label", "metrics", "model", "model_path")
            )
            and _is_str_dict(entry.get("hyperparams"))
        ):
            raise RunnerError(
                f"manifest {path}: trial #{index} needs string fields name, label, "
                "metrics, model, model_path and an object of strings hyperparams"
            )
        curve = entry.get("learning_curve", [])
        if not isinstance(curve, list) or not all(
            isinstance(point, dict)
            and isinstance(point.get("epoch"), int)
            and isinstance(point.get("metrics"), str)
            for point in curve
        ):
            raise RunnerError(
                f"manifest {path}: trial #{index} has a learning_curve that is not "
                "a list of {epoch: int, metrics: path}"
            )
        # The last point of a curve is the trial's metrics file: read each file once.
        read = {
            file: _read_metrics(entry["name"], file)
            for file in dict.fromkeys(
                [entry["metrics"], *(p["metrics"] for p in curve)]
            )
        }
        points = [(p["epoch"], read[p["metrics"]]) for p in curve]
        trials.append(_trial(path, index, entry, read[entry["metrics"]], points))
    return names, trials


def _trial(
    path: str,
    index: int,
    entry: dict[str, Any],
    final: Evaluation,
    points: list[tuple[int, Evaluation]],
) -> Trial:
    """A trial from its manifest entry and its evaluations (the last one, each epoch's)."""
    early = entry.get("early_stopping")
    if early is not None and not (
        isinstance(early, dict)
        and isinstance(early.get("rungs"), list)
        and all(isinstance(e, int) for e in early["rungs"])
        and early["rungs"]
        and (early.get("bracket") is None or isinstance(early["bracket"], int))
    ):
        raise RunnerError(
            f"manifest {path}: trial #{index} has an early_stopping that is not "
            "{rungs: [int, ...], bracket: int or null}"
        )
    if final["stop"] is not None and early is None:
        raise RunnerError(
            f"trial {entry['name']} was stopped early, but its search has no early_stopping"
        )
    failure = final["failure"]
    metrics = final["metrics"]
    early_stopping = None
    if early is not None:
        trained = [(k, e) for k, e in points if e["stop"] is None] or [(0, final)]
        failures = [e["failure"] for _, e in trained if e["failure"] is not None]
        failure = failures[0] if failures else failure
        if final["stop"] is not None:
            metrics = dict(trained[-1][1]["metrics"])
        epochs = final["stop"]["epoch"] if final["stop"] else early["rungs"][-1]
        early_stopping = EarlyStopping(
            tuple(early["rungs"]), early.get("bracket"), epochs, final["stop"]
        )
        points = trained
    hyperparams, round_ = _hyperparams_and_round(path, index, entry)
    return Trial(
        entry["name"],
        entry["label"],
        hyperparams,
        metrics,
        entry["model"],
        entry["model_path"],
        failure,
        tuple((epoch, e["metrics"]) for epoch, e in points),
        early_stopping,
        round_,
        index,
    )


def _hyperparams_and_round(
    path: str, index: int, entry: dict[str, Any]
) -> tuple[dict[str, str], int | None]:
    """A manifest entry's hyperparameters (with its file's) and its round."""
    hyperparams_file, round_ = entry.get("hyperparams_file"), entry.get("round")
    if not (hyperparams_file is None or isinstance(hyperparams_file, str)) or not (
        round_ is None or (isinstance(round_, int) and not isinstance(round_, bool))
    ):
        raise RunnerError(
            f"manifest {path}: trial #{index} needs a string or null hyperparams_file "
            "and an int or null round"
        )
    if hyperparams_file is None:
        return entry["hyperparams"], round_
    try:
        with open(hyperparams_file, encoding="utf-8") as f:
            from_file = parse_hyperparams(f.read())
    except (OSError, UnicodeDecodeError, RunnerError) as e:
        raise RunnerError(
            f"cannot read the hyperparameters of trial {entry['name']} from "
            f"{hyperparams_file}: {e}"
        ) from None
    return {**entry["hyperparams"], **from_file}, round_


def _read_metrics(trial: str, path: str) -> Evaluation:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_evaluation(f.read())
    except (OSError, UnicodeDecodeError, RunnerError) as e:
        raise RunnerError(
            f"cannot read the metrics of trial {trial} from {path}: {e}"
        ) from None


def rank(trials: list[Trial], metric: str, mode: str) -> list[Trial]:
    """Return the trials best first: those that trained to the end by the
    metric, then those early stopping stopped (more epochs first), then the
    failed ones; ties keep their order (stable sort)."""
    if mode not in ("max", "min"):
        raise RunnerError(f'mode must be "max" or "min", got {json.dumps(mode)}')
    ok = [t for t in trials if t.failure is None]
    for trial in ok:
        if metric not in trial.metrics:
            raise RunnerError(
                f"trial {trial.name} has no metric {json.dumps(metric)}; "
                f"its metrics are: {', '.join(sorted(trial.metrics))}"
            )
    ranked = sorted(ok, key=lambda t: t.metrics[metric], reverse=mode == "max")
    ranked.sort(key=lambda t: -t.early_stopping.epochs if t.early_stopping else 0)
    ranked.sort(key=lambda t: t.status != "ok")
    return ranked + [t for t in trials if t.failure is not None]


def best_trial(ranked: list[Trial]) -> Trial:
    """The winner; an error if every trial failed."""
    if ranked[0].status == "ok":
        return ranked[0]
    if ranked[0].status == "stopped":
        raise RunnerError(
            "no trial reached the last rung, so there is no best model: every "
            "trial that was promoted failed"
        )
    first = ranked[0]
    assert first.failure is not None
    raise RunnerError(
        f"all {len(ranked)} trials failed, so there is no best model. The first, "
        f"{first.name}: {describe_failure(first.failure)}\n{stderr_tail(first.failure)}"
    )
