#!/usr/bin/env python3
"""Train a linear classifier on the MNIST npz one epoch at a time.

Usage (databazel calls it once per epoch, see `model(epochs = N)`)::

    train_epochs.py --data mnist.npz --model-output-path OUT.pkl \\
        --hyperparams '{"alpha": "0.0001"}' --epoch K [--init-model-path PREVIOUS.pkl]

Epoch 1 starts a scikit-learn SGDClassifier (logistic loss); epoch K > 1
unpickles the checkpoint of epoch K - 1 from --init-model-path. Each epoch is
one `partial_fit` pass over the training examples, in an order shuffled with a
seed made of RANDOM_STATE and K only: epoch K does the same thing whatever the
number of epochs, and the same inputs give a byte-identical pickle. Without
--epoch the script trains a single epoch.

Hyperparameters: alpha (L2 regularisation, float > 0, default 0.0001).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys

import lib  # first: it pins BLAS to one thread before numpy loads
import numpy as np

PROG = "train_epochs.py"
RANDOM_STATE = 0
PICKLE_PROTOCOL = 5
CLASSES = np.arange(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model-output-path", required=True)
    parser.add_argument("--hyperparams", default="{}")
    parser.add_argument("--epoch", type=int, default=1)
    parser.add_argument("--init-model-path")
    args = parser.parse_args(argv)

    hyperparams = json.loads(args.hyperparams)
    unknown = sorted(set(hyperparams) - {"alpha"})
    if unknown:
        print(f"{PROG}: error: unknown hyperparameter(s): {unknown}", file=sys.stderr)
        return 2
    alpha = float(hyperparams.get("alpha", "0.0001"))
    if not (math.isfinite(alpha) and alpha > 0):
        print(f"{PROG}: error: alpha must be > 0, got {alpha!r}", file=sys.stderr)
        return 2

    from sklearn.linear_model import SGDClassifier

    if args.init_model_path:
        with open(args.init_model_path, "rb") as f:
            model = pickle.load(f)
    else:
        model = SGDClassifier(loss="log_loss", alpha=alpha, random_state=RANDOM_STATE)

    X, y = lib.load_split(args.data, "train")
    order = np.random.default_rng([RANDOM_STATE, args.epoch]).permutation(len(y))
    model.partial_fit(X[order], y[order], classes=CLASSES)
    lib.write_bytes_atomic(
        args.model_output_path, pickle.dumps(model, protocol=PICKLE_PROTOCOL)
    )
    print(f"{PROG}: epoch {args.epoch} (alpha={alpha!r}) on {len(y)} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
