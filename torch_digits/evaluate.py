#!/usr/bin/env python3
"""Evaluate a digits CNN checkpoint on the test split.

    evaluate.py --model-path CHECKPOINT --data-path digits.npz --output-dir DIR

Writes DIR/metrics.json: accuracy and log_loss (mean cross-entropy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import net
import torch
from torch import nn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate.py")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    net.setup()
    checkpoint = net.load(args.model_path)
    model = net.network(int(checkpoint["hyperparams"]["width"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    images, labels = net.load_split(args.data_path, "test")
    with torch.no_grad():
        logits = model(images)
    metrics = {
        "accuracy": float((logits.argmax(1) == labels).float().mean()),
        "log_loss": float(nn.functional.cross_entropy(logits, labels)),
    }
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
