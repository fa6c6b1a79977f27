"""Suggest the trials of one round of a model-based search (`strategy = "tpe"`).

Bazel runs this tool (through tool.py), with the packages of `suggest_deps` (optuna) on
PYTHONPATH, as::

    python3 tool.py suggest --target //pkg:search__round-2__suggest \\
        --space SPACE_JSON --fixed FIXED_JSON --metric NAME --mode max|min \\
        --seed S --round R \\
        [--trial HYPERPARAMS.json METRICS.json ...] \\
        --output OUT_0.hyperparams.json [--output OUT_1.hyperparams.json ...]

SPACE_JSON is the search space in search order, as suggest.bzl writes it::

    {"significant_digits": 4,
     "entries": [{"name": "C", "kind": "loguniform", "low": "0.001", "high": "100"},
                 {"name": "tol", "kind": "uniform", "low": "0", "high": "0.001"},
                 {"name": "max_iter", "kind": "randint", "low": 50, "high": 300},
                 {"name": "solver", "kind": "choice", "values": ["lbfgs", "saga"]}]}

Bounds of `uniform` and `loguniform` are exact decimal strings. Each `--trial`
is an earlier trial: the hyperparameters file its training read and the
metrics file its evaluation wrote, which may be a failure record
(records.py). The earlier trials go to Optuna's TPE sampler through its API
(`create_trial` + `add_trial`): a completed trial with its metric, a failed one
as `TrialState.FAIL`. The sampler's seed is derived from S and R only. Then it
is asked once per `--output`, and each answer, with FIXED_JSON's
hyperparameters, is written as a compact JSON object of strings with sorted
keys, the values rendered exactly as random.bzl renders random draws:

* a list of strings -> CategoricalDistribution; the value is the string;
* randint(low, high) -> IntDistribution(low, high), both ends included;
* uniform(low, high) -> FloatDistribution(low, high, step = 10^e) where 10^e
  is random.bzl's rounding unit (significant digits of `high - low`) and both
  bounds are multiples of it: the distribution's points are exactly the
  values random search can draw. When a bound is not a multiple (a bound with
  more digits than the rounding keeps), the distribution is continuous and
  the value is rounded as random.bzl rounds (half up, then clamped);
* loguniform(low, high) -> FloatDistribution(low, high, log = True), the value
  rounded to the significant digits of the value, half up, clamped.

Same inputs, same bytes: the suggestion is a pure function of its arguments
and the files' contents. On any error, no output is left and one
``databazel: error: <target>: ...`` line is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import decimal
import hashlib
import json
import os
import warnings
from decimal import Decimal
from typing import Any


from contract import (
    ContractError,
    RunnerError,
    encode_hyperparams,
    parse_hyperparams,
)
from outputs import run_tool, write_atomic
from records import parse_metrics_or_failure

# Exact decimal arithmetic for rounding (more digits than any bound has).
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One hyperparameter of the search space."""

    name: str
    kind: str  # "choice", "randint", "uniform" or "loguniform"
    values: tuple[str, ...] = ()
    low: Decimal = Decimal(0)
    high: Decimal = Decimal(0)


@dataclasses.dataclass(frozen=True)
class Space:
    entries: tuple[Entry, ...]
    significant_digits: int


@dataclasses.dataclass(frozen=True)
class Observation:
    """An earlier trial: its hyperparameters, and its metric or None if it failed."""

    hyperparams: dict[str, str]
    value: float | None


def parse_space(text: str) -> Space:
    """The search space from its JSON (see the module docstring)."""
    data = json.loads(text)
    entries = []
    for item in data["entries"]:
        kind = item["kind"]
        if kind == "choice":
            values = tuple(item["values"])
            if not values or not all(isinstance(v, str) for v in values):
                raise RunnerError(f"search space entry {item['name']}: no values")
            entries.append(Entry(item["name"], kind, values=values))
        elif kind in ("randint", "uniform", "loguniform"):
            low, high = Decimal(str(item["low"])), Decimal(str(item["high"]))
            entries.append(Entry(item["name"], kind, low=low, high=high))
        else:
            raise RunnerError(f"search space entry {item['name']}: unknown kind {kind}")
    return Space(tuple(entries), int(data["significant_digits"]))


# ---------------------------------------------------------------------------
# Values as random.bzl renders them


def format_decimal(value: Decimal) -> str:
    """A decimal as random.bzl's format_decimal renders it (like Python's float repr).

    Plain notation when the leading digit's position is between 10^-5 and
    10^15, scientific (`1.234e-07`, `5e+20`) otherwise; no trailing zeros; an
    integral value has no decimal point.
    """
    if value == 0:
        return "0"
    sign, digits_tuple, exponent = value.normalize(_CONTEXT).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digits_tuple)
    prefix = "-" if sign else ""
    magnitude = len(digits) - 1 + exponent
    if magnitude < -5 or magnitude > 15:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if magnitude < 0 else '+'}{abs(magnitude):02d}"
    if exponent >= 0:
        return prefix + digits + "0" * exponent
    point = len(digits) + exponent
    if point > 0:
        return prefix + digits[:point] + "." + digits[point:]
    return prefix + "0." + "0" * (-point) + digits


def uniform_unit(entry: Entry, significant_digits: int) -> Decimal:
    """random.bzl's rounding unit of a uniform entry: 10^(magnitude(high - low) - (digits - 1))."""
    span = _CONTEXT.subtract(entry.high, entry.low)
    return Decimal(1).scaleb(span.adjusted() - (significant_digits - 1))


def _on_grid(value: Decimal, unit: Decimal) -> bool:
    return _CONTEXT.remainder(value, unit) == 0


def _clamp(value: Decimal, entry: Entry) -> Decimal:
    return min(max(value, entry.low), entry.high)


def render(entry: Entry, value: Any, significant_digits: int) -> str:
    """The string random search would pass for `value`, a value Optuna suggested."""
    if entry.kind == "choice":
        return str(value)
    if entry.kind == "randint":
        return str(int(value))
    exact = Decimal(float(value))  # the float's exact binary value
    if entry.kind == "uniform":
        unit = uniform_unit(entry, significant_digits)
        rounded = _CONTEXT.multiply(
            _CONTEXT.divide(exact, unit).to_integral_value(decimal.ROUND_HALF_UP), unit
        )
    else:
        unit = Decimal(1).scaleb(exact.adjusted() - (significant_digits - 1))
        rounded = exact.quantize(unit, decimal.ROUND_HALF_UP, _CONTEXT)
    return format_decimal(_clamp(rounded, entry))


# ---------------------------------------------------------------------------
# Optuna


def distribution(entry: Entry, significant_digits: int) -> Any:
    """The Optuna distribution of a search-space entry (see the module docstring)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if entry.kind == "choice":
        return CategoricalDistribution(entry.values)
    if entry.kind == "randint":
        return IntDistribution(int(entry.low), int(entry.high))
    if entry.kind == "loguniform":
        return FloatDistribution(float(entry.low), float(entry.high), log=True)
    unit = uniform_unit(entry, significant_digits)
    aligned = _on_grid(entry.low, unit) and _on_grid(entry.high, unit)
    return FloatDistribution(
        float(entry.low), float(entry.high), step=float(unit) if aligned else None
    )


def _parameter(entry: Entry, text: str, where: str) -> Any:
    """A trial's hyperparameter value (a string) as Optuna's parameter value."""
    try:
        if entry.kind == "choice":
            if text not in entry.values:
                raise ValueError
            return text
        if entry.kind == "randint":
            value: Any = int(text)
        else:
            value = float(text)
        if not entry.low <= Decimal(text) <= entry.high:
            raise ValueError
        return value
    except (ValueError, decimal.InvalidOperation):
        raise RunnerError(
            f"{where} has {entry.name} = {json.dumps(text)}, which is not a value of "
            "the search space"
        ) from None


def sampler_seed(seed: int, round_: int) -> int:
    """The TPE sampler's seed for round `round_` of a search seeded `seed` (32 bits)."""
    digest = hashlib.sha256(f"databazel-tpe:{seed}:{round_}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def suggest(
    space: Space,
    observations: list[Observation],
    mode: str,
    seed: int,
    round_: int,
    count: int,
) -> list[dict[str, str]]:
    """`count` suggestions of Optuna's TPE sampler after `observations`, rendered as strings."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {
        e.name: distribution(e, space.significant_digits) for e in space.entries
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature notices on stderr
        # Round 0 (drawn at load time, as random search draws) is the startup:
        # from round 1 on, every suggestion is TPE's.
        sampler = optuna.samplers.TPESampler(
            seed=sampler_seed(seed, round_), n_startup_trials=0
        )
        study = optuna.create_study(
            sampler=sampler, direction="maximize" if mode == "max" else "minimize"
        )
        for index, observation in enumerate(observations):
            params = {
                e.name: _parameter(
                    e, observation.hyperparams[e.name], f"earlier trial #{index}"
                )
                for e in space.entries
            }
            study.add_trial(
                create_trial(
                    params=params,
                    distributions=distributions,
                    value=observation.value,
                    state=TrialState.FAIL
                    if observation.value is None
                    else TrialState.COMPLETE,
                )
            )
        suggestions = []
        for _ in range(count):
            trial = study.ask(distributions)
            suggestions.append(
                {
                    e.name: render(e, trial.params[e.name], space.significant_digits)
                    for e in space.entries
                }
            )
    return suggestions


# ---------------------------------------------------------------------------
# Files


def read_observation(
    space: Space, hyperparams_path: str, metrics_path: str, metric: str
) -> Observation:
    """An earlier trial from its hyperparameters file and its metrics file."""
    try:
        with open(hyperparams_path, encoding="utf-8") as f:
            hyperparams = parse_hyperparams(f.read())
        with open(metrics_path, encoding="utf-8") as f:
            metrics, failure = parse_metrics_or_failure(f.read())
    except (OSError, UnicodeDecodeError, ContractError) as e:
        raise RunnerError(f"cannot read an earlier trial: {e}") from None
    missing = [e.name for e in space.entries if e.name not in hyperparams]
    if missing:
        raise RunnerError(
            f"{hyperparams_path} has no value for {', '.join(missing)} of the search space"
        )
    if failure is not None:
        return Observation(hyperparams, None)
    if metric not in metrics:
        raise RunnerError(
            f"{metrics_path} has no metric {json.dumps(metric)}; its metrics are: "
            f"{', '.join(sorted(metrics))}"
        )
    return Observation(hyperparams, float(metrics[metric]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suggest.py", description="databazel model-based search round"
    )
    for flag in ("--target", "--space", "--fixed", "--metric", "--mode"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--round", type=int, required=True)
    parser.add_argument(
        "--trial",
        nargs=2,
        action="append",
        default=[],
        metavar=("HYPERPARAMS", "METRICS"),
    )
    parser.add_argument("--output", action="append", required=True)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)

    def work() -> None:
        space = parse_space(args.space)
        fixed = parse_hyperparams(args.fixed)
        observations = [
            read_observation(space, hp, metrics, args.metric)
            for hp, metrics in args.trial
        ]
        try:
            import optuna  # noqa: F401
        except ImportError as e:
            raise RunnerError(
                f"the suggestion step cannot import optuna ({e}); give the search "
                'suggest_deps = [requirement("optuna")] from a Python environment '
                "whose lock file has optuna"
            ) from None
        suggestions = suggest(
            space, observations, args.mode, args.seed, args.round, len(args.output)
        )
        for path, values in zip(args.output, suggestions):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            write_atomic(path, encode_hyperparams({**fixed, **values}))

    return run_tool(args.target, "suggestion step", args.output, work)
