"""Failure and stop records: what a failed trial leaves in place of its model or
metrics (``--allow-failure``), what a trial that early stopping stopped leaves
in place of its later checkpoints and metrics, and how the next steps recognise
them."""

from __future__ import annotations

import json
import os
import signal
from typing import Any, TypedDict

from contract import (
    ContractError,
    OutputContractError,
    RunnerError,
    ScriptFailed,
    load_json,
    parse_metrics,
)


class FailureRecord(TypedDict):
    """What a failed trial leaves instead of its model or metrics (``--allow-failure``)."""

    status: str  # always "failed"
    stage: str  # "train" or "evaluate": the step that failed
    target: str  # the label of the target whose script failed
    exit_code: int | None  # the script's exit code; None if it was killed or never ran
    signal: str | None  # e.g. "SIGKILL" when the script was killed
    error: str  # databazel's error message
    stderr_tail: str  # the last lines of the script's stderr ("" if none)


# The first bytes of a model file that is a failed training's record.
FAILED_MODEL_HEADER = b"databazel failed trial v1\n"


def signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return str(-returncode)


def relative_to_execroot(text: str, execroot: str | None = None) -> str:
    """`text` with the paths under the execroot (default: the working directory) relative.

    The execroot is a sandbox's, another each build (for example
    /dev/shm/bazel-sandbox.<hash>/linux-sandbox/311/execroot/ws), and a
    traceback names the script by it: a record holding it would differ
    between clean builds and checkouts.
    """
    root = os.getcwd() if execroot is None else execroot
    for base in dict.fromkeys((root, os.path.realpath(root))):
        base = base.rstrip(os.sep)
        if len(base) > 1:
            text = text.replace(base + os.sep, "")
    return text


def failure_record(stage: str, target: str, error: RunnerError) -> FailureRecord:
    """The record of a trial that failed with `error` in `stage` (paths execroot-relative)."""
    returncode = error.returncode if isinstance(error, ScriptFailed) else None
    if isinstance(error, OutputContractError):
        returncode = 0  # the script exited 0 but broke the contract
    return {
        "status": "failed",
        "stage": stage,
        "target": target,
        "exit_code": returncode if returncode is None or returncode >= 0 else None,
        "signal": signal_name(returncode)
        if returncode is not None and returncode < 0
        else None,
        "error": relative_to_execroot(str(error)),
        "stderr_tail": relative_to_execroot(error.stderr_tail)
        if isinstance(error, ScriptFailed)
        else "",
    }


def format_failure(record: FailureRecord) -> str:
    """The canonical JSON text of a failure record."""
    return json.dumps(record, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def parse_failure(data: Any) -> FailureRecord | None:
    """The failure record in parsed JSON `data`, or None if it is not one."""
    if not isinstance(data, dict) or data.get("status") != "failed":
        return None
    fields = {"stage": str, "target": str, "error": str, "stderr_tail": str}
    for key, kind in fields.items():
        if not isinstance(data.get(key), kind):
            raise ContractError(f"a failure record needs a string {json.dumps(key)}")
    for key in ("exit_code", "signal"):
        value = data.get(key)
        if value is not None and not isinstance(
            value, int if key == "exit_code" else str
        ):
            raise ContractError(f"a failure record has an invalid {json.dumps(key)}")
    return {
        "status": "failed",
        "stage": data["stage"],
        "target": data["target"],
        "exit_code": data.get("exit_code"),
        "signal": data.get("signal"),
        "error": data["error"],
        "stderr_tail": data["stderr_tail"],
    }


def parse_metrics_or_failure(
    text: str,
) -> tuple[dict[str, float | int], FailureRecord | None]:
    """Parse an evaluation's metrics file: (metrics, None), or ({}, failure record)."""
    failure = parse_failure(load_json(text))
    return ({}, failure) if failure is not None else (parse_metrics(text), None)


# --- early stopping -----------------------------------------------------------


class StopRecord(TypedDict):
    """A rung's decision to stop a trial (``rung.py``), and what the trial's
    later checkpoints and evaluations hold instead of a model or metrics."""

    status: str  # always "stopped"
    epoch: int  # the last epoch the trial trained
    rung: str  # the label of the rung that stopped it


# A rung's decision to let a trial train on.
PROMOTED = {"status": "promoted"}

# The first bytes of a checkpoint of an epoch that a stopped trial did not train.
STOPPED_MODEL_HEADER = b"databazel stopped trial v1\n"


def stop_record(epoch: int, rung: str) -> StopRecord:
    return {"status": "stopped", "epoch": epoch, "rung": rung}


def format_record(record: StopRecord | dict[str, str]) -> str:
    """The canonical JSON text of a decision or stop record."""
    return json.dumps(record, sort_keys=True) + "\n"


def parse_stop(data: Any) -> StopRecord | None:
    """The stop record in parsed JSON `data`, or None if it is not one."""
    if not isinstance(data, dict) or data.get("status") != "stopped":
        return None
    epoch, rung = data.get("epoch"), data.get("rung")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise ContractError('a stop record needs a positive int "epoch"')
    if not isinstance(rung, str):
        raise ContractError('a stop record needs a string "rung"')
    return stop_record(epoch, rung)


def read_decision(path: str) -> StopRecord | None:
    """A rung's decision file: None if the trial goes on, else why it stopped."""
    try:
        with open(path, encoding="utf-8") as f:
            data = load_json(f.read())
        stop = parse_stop(data)
    except (OSError, UnicodeDecodeError, ContractError) as e:
        raise RunnerError(
            f"cannot read the early-stopping decision {path}: {e}"
        ) from None
    if stop is None and data != PROMOTED:
        raise RunnerError(
            f"the early-stopping decision {path} is neither "
            f'{{"status": "promoted"}} nor a stop record'
        )
    return stop


def read_stopped_model(path: str) -> StopRecord | None:
    """The stop record a stopped trial left as a checkpoint, or None."""
    with open(path, "rb") as f:
        if f.read(len(STOPPED_MODEL_HEADER)) != STOPPED_MODEL_HEADER:
            return None
        text = f.read().decode("utf-8", errors="replace")
    stop = parse_stop(load_json(text))
    if stop is None:
        raise ContractError(f"model {path} starts like a stop record but is not one")
    return stop


class Evaluation(TypedDict):
    """An evaluation's metrics file: metrics, or why there are none."""

    metrics: dict[str, float | int]
    failure: FailureRecord | None
    stop: StopRecord | None


def parse_evaluation(text: str) -> Evaluation:
    """Parse an evaluation's metrics file, which may be a failure or stop record."""
    data = load_json(text)
    stop = parse_stop(data)
    if stop is not None:
        return {"metrics": {}, "failure": None, "stop": stop}
    metrics, failure = parse_metrics_or_failure(text)
    return {"metrics": metrics, "failure": failure, "stop": None}


def read_failed_model(path: str) -> FailureRecord | None:
    """The failure record a failed training left as its model file, or None."""
    with open(path, "rb") as f:
        if f.read(len(FAILED_MODEL_HEADER)) != FAILED_MODEL_HEADER:
            return None
        text = f.read().decode("utf-8", errors="replace")
    try:
        failure = parse_failure(load_json(text))
    except ContractError:
        failure = None
    if failure is None:
        raise ContractError(f"model {path} starts like a failure record but is not one")
    return failure
