"""Failure records: what a failed trial leaves in place of its model or metrics
(``--allow-failure``), and how the next steps recognise one."""

from __future__ import annotations

import json
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


def failure_record(stage: str, target: str, error: RunnerError) -> FailureRecord:
    """The record of a trial that failed with `error` in `stage`."""
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
        "error": str(error),
        "stderr_tail": error.stderr_tail if isinstance(error, ScriptFailed) else "",
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
