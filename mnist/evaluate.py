#!/usr/bin/env python3
"""Evaluate a pickled classifier on the test split of the MNIST npz.

Usage::

    evaluate.py --model-path model.pkl --data-path mnist.npz --output-dir DIR

Writes DIR/metrics.json, a flat JSON object of finite floats:

    accuracy  fraction of test examples classified correctly
    macro_f1  F1 score averaged over classes, unweighted
    log_loss  mean negative log-likelihood of the true class, natural log,
              probabilities clipped to [1e-15, 1]

and DIR/confusion_matrix.csv (rows: true label, columns: predicted label).
Both files are deterministic for the same inputs.

The model file is unpickled, so it must come from a trusted source (here:
train.py in the same build).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys

import lib  # first: it pins BLAS to one thread before numpy loads
import numpy as np

PROG = "evaluate.py"
PROB_FLOOR = 1e-15


def compute_metrics(model, X: np.ndarray, y: np.ndarray):
    """Return (metrics dict, labels, confusion matrix) for `model` on X, y."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    pred = model.predict(X)
    proba = model.predict_proba(X)
    classes = np.asarray(model.classes_)

    # Log-loss by hand rather than sklearn.metrics.log_loss, so a test label
    # the model never saw costs -log(PROB_FLOOR) instead of raising.
    column = {int(c): i for i, c in enumerate(classes)}
    p_true = np.array(
        [
            proba[i, column[int(t)]] if int(t) in column else 0.0
            for i, t in enumerate(y)
        ],
        dtype=np.float64,
    )
    log_loss = float(-np.mean(np.log(np.clip(p_true, PROB_FLOOR, 1.0))))

    metrics = {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0.0)),
        "log_loss": log_loss,
    }
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise ValueError(f"metric {name} is not finite: {value!r}")

    labels = np.union1d(classes.astype(np.int64), np.unique(y)).astype(np.int64)
    matrix = confusion_matrix(y, pred, labels=labels)
    return metrics, labels, matrix


def confusion_csv(labels: np.ndarray, matrix: np.ndarray) -> str:
    lines = ["true\\pred," + ",".join(str(int(c)) for c in labels)]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"{int(label)}," + ",".join(str(int(v)) for v in row))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", required=True, help="pickled model (train.py)")
    parser.add_argument("--data-path", required=True, help="mnist.npz (Keras layout)")
    parser.add_argument(
        "--output-dir", required=True, help="directory for metrics.json"
    )
    args = parser.parse_args(argv)

    try:
        with open(args.model_path, "rb") as f:
            model = pickle.load(f)
        X, y = lib.load_split(args.data_path, "test")
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1

    metrics, labels, matrix = compute_metrics(model, X, y)

    os.makedirs(args.output_dir, exist_ok=True)
    text = json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n"
    lib.write_bytes_atomic(os.path.join(args.output_dir, "metrics.json"), text.encode())
    lib.write_bytes_atomic(
        os.path.join(args.output_dir, "confusion_matrix.csv"),
        confusion_csv(labels, matrix).encode(),
    )
    summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in sorted(metrics))
    print(f"{PROG}: {len(y)} test examples: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
