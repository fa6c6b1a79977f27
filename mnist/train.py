#!/usr/bin/env python3
"""Train a logistic-regression classifier on the MNIST npz.

Usage::

    train.py --data mnist.npz --model-output-path model.pkl \\
             --hyperparams '{"C": "1.0", "max_iter": "100"}'

Hyperparameters (a JSON object; values are strings, plain JSON numbers are
accepted too):

    C         inverse L2 regularisation strength, float > 0 (default 1.0)
    max_iter  lbfgs iteration limit, int >= 1 (default 100)
    tol       lbfgs stopping tolerance, float > 0 (default 1e-4)

Any other name is an error (exit status 2). The model is a fitted
scikit-learn LogisticRegression (lbfgs), pickled with protocol 5. Training is
deterministic: fixed random_state and single-threaded BLAS, so the same
inputs give a byte-identical pickle on the same machine and library versions.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import warnings

import lib  # first: it pins BLAS to one thread before numpy loads

PROG = "train.py"
DEFAULTS = {"C": 1.0, "max_iter": 100, "tol": 1e-4}
RANDOM_STATE = 0
PICKLE_PROTOCOL = 5


class UsageError(Exception):
    """Bad command-line input; exit status 2."""


def _as_text(name: str, value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise UsageError(
        f"hyperparameter {name!r} must be a string (or number), "
        f"got {type(value).__name__}: {value!r}"
    )


def _positive_float(name: str, value: object) -> float:
    text = _as_text(name, value)
    try:
        number = float(text)
    except ValueError:
        raise UsageError(f"hyperparameter {name!r}: not a number: {text!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise UsageError(
            f"hyperparameter {name!r} must be finite and > 0, got {text!r}"
        )
    return number


def _positive_int(name: str, value: object) -> int:
    text = _as_text(name, value)
    try:
        number = int(text)
    except ValueError:
        raise UsageError(f"hyperparameter {name!r}: not an integer: {text!r}") from None
    if number < 1:
        raise UsageError(f"hyperparameter {name!r} must be >= 1, got {text!r}")
    return number


_PARSERS = {"C": _positive_float, "max_iter": _positive_int, "tol": _positive_float}


def parse_hyperparams(text: str) -> dict[str, float | int]:
    """Parse the --hyperparams JSON into typed values, defaults filled in."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--hyperparams is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"--hyperparams must be a JSON object, got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - set(_PARSERS))
    if unknown:
        raise UsageError(
            f"unknown hyperparameter(s): {', '.join(unknown)}; "
            f"known: {', '.join(_PARSERS)}"
        )
    params = dict(DEFAULTS)
    for name, value in raw.items():
        params[name] = _PARSERS[name](name, value)
    return params


def train(X, y, params: dict[str, float | int]):
    """Fit LogisticRegression; return (model, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        C=params["C"],
        max_iter=params["max_iter"],
        tol=params["tol"],
        solver="lbfgs",
        random_state=RANDOM_STATE,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X, y)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model, converged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="mnist.npz (Keras layout)")
    parser.add_argument(
        "--model-output-path", required=True, help="where to write the pickled model"
    )
    parser.add_argument(
        "--hyperparams",
        default="{}",
        help='JSON object of strings, e.g. \'{"C": "1.0", "max_iter": "100"}\'',
    )
    args = parser.parse_args(argv)

    try:
        params = parse_hyperparams(args.hyperparams)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    try:
        X, y = lib.load_split(args.data, "train")
    except (OSError, ValueError) as e:
        print(f"{PROG}: error: cannot load training data: {e}", file=sys.stderr)
        return 1

    model, converged = train(X, y, params)
    lib.write_bytes_atomic(
        args.model_output_path, pickle.dumps(model, protocol=PICKLE_PROTOCOL)
    )

    setting = ", ".join(f"{k}={params[k]!r}" for k in DEFAULTS)
    print(
        f"{PROG}: LogisticRegression({setting}) on {len(y)} examples, "
        f"{int(max(model.n_iter_))} lbfgs iterations; "
        f"wrote {args.model_output_path}"
    )
    if not converged:
        print(
            f"{PROG}: note: lbfgs reached max_iter={params['max_iter']} before "
            f"converging to tol={params['tol']!r} (model written anyway)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
