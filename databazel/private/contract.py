"""The script contract: databazel's errors, the hyperparameters the script gets
and the metrics an evaluation script writes (``METRICS_FORMAT``)."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

METRICS_FORMAT = """\
The evaluation script must write DIR/metrics.json (DIR is the path given by
--output-dir) containing one JSON object that maps metric names to numbers:

    {"accuracy": 0.9731, "log_loss": 0.0912, "num_examples": 10000}

* at least one entry; every key is a non-empty string; no key appears twice;
* every value is a finite JSON number (integer or decimal);
* not allowed as values: true/false, null, strings (e.g. "0.97"), lists,
  nested objects, NaN, Infinity, -Infinity.

databazel rewrites it canonically (keys sorted, 2-space indent, trailing
newline) into the evaluation target's .metrics.json output."""

ERROR_PREFIX = "databazel: error: "


class RunnerError(Exception):
    """A failure the user has to fix; its message is printed as one error."""


class ContractError(RunnerError):
    """A script or input file does not follow the databazel contract."""


class OutputContractError(ContractError):
    """The script exited 0, but what it wrote does not follow the contract."""


class ScriptFailed(RunnerError):
    """The user's script exited non-zero or was killed."""

    def __init__(self, message: str, returncode: int, stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class FailedModel(RunnerError):
    """evaluate got a failed training's record instead of a model."""


class MachineError(RunnerError):
    """The machine cannot run the trial now (its GPUs): an error, never a recorded result.

    ``allow_failure`` records what the trial did; a busy or unsafe GPU lock
    directory says nothing about the trial, and a record of it would be cached.
    """


def read_text(path: str) -> str:
    """The UTF-8 text of the file at `path`; a RunnerError naming it if it can't be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RunnerError(f"cannot read {path}: {e}") from None


def error_line(target: str, message: str) -> str:
    """Return the user-facing error text for `target`."""
    return f"{ERROR_PREFIX}{target}: {message}"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ContractError(f"duplicate key {json.dumps(key, ensure_ascii=False)}")
        result[key] = value
    return result


def load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as e:
        raise ContractError(f"not valid JSON: {e}") from None
    except RecursionError:
        raise ContractError("not valid JSON: nested too deeply") from None
    except ValueError as e:
        # Python refuses integers of more than 4,300 digits (sys.int_info).
        raise ContractError(f"not valid JSON: {str(e).split(';')[0]}") from None


def _describe(value: Any) -> str:
    """Describe a JSON value for an error message, e.g. 'a string "0.9"'."""
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = json.dumps(
            value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False
        )
        return f"a string {shown}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a nested object"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"a number ({value!r})"


def parse_hyperparams(text: str) -> dict[str, str]:
    """Parse a hyperparameters file: a JSON object of string keys and values."""
    data = load_json(text)
    if not isinstance(data, dict):
        raise ContractError(
            f"expected a JSON object of strings, found {_describe(data)}"
        )
    for key, value in data.items():
        if not isinstance(value, str):
            raise ContractError(
                f"hyperparameter {json.dumps(key, ensure_ascii=False)} has "
                f"{_describe(value)} value; all values must be strings"
            )
    return data


def encode_hyperparams(hyperparams: dict[str, str]) -> str:
    """The compact, key-sorted JSON passed to the script via --hyperparams."""
    return json.dumps(
        hyperparams, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )


def parse_metrics(text: str, ignore: Collection[str] = ()) -> dict[str, float | int]:
    """Parse and validate metrics JSON text (see METRICS_FORMAT).

    Entries named in `ignore` (an evaluation's `ignore_metrics`) are left
    out, whatever their values. Raises ContractError saying exactly what is
    wrong.
    """
    data = load_json(text)
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, found {_describe(data)}")
    if not data:
        raise ContractError("the object is empty; at least one metric is required")
    metrics: dict[str, float | int] = {}
    for key, value in data.items():
        if key in ignore:
            continue
        name = json.dumps(key, ensure_ascii=False)
        if not key:
            raise ContractError("a metric has an empty name")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ContractError(
                f"metric {name} has {_describe(value)} value; it must be a number"
            )
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond the range of a double
            raise ContractError(
                f"metric {name} is an integer of {len(str(abs(value)))} digits, "
                "too large for a floating-point number"
            ) from None
        if not finite:
            raise ContractError(
                f"metric {name} is {_describe(value)}; it must be a finite number"
            )
        metrics[key] = value
    if not metrics:
        raise ContractError(
            "every entry is one of `ignore_metrics`; at least one metric is required"
        )
    return metrics


def format_metrics(metrics: dict[str, float | int]) -> str:
    """The canonical text of a metrics file."""
    return json.dumps(metrics, sort_keys=True, indent=2, allow_nan=False) + "\n"
