"""Evaluates the example's model: mean squared error on the test rows."""

import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--model-path", required=True)
parser.add_argument("--data-path", required=True)
parser.add_argument("--output-dir", required=True)
args = parser.parse_args()

with open(args.model_path) as f:
    model = json.load(f)
with open(args.data_path) as f:
    values = [float(line) for line in f]
guess = model["mean"] * model["scale"]
mse = sum((v - guess) ** 2 for v in values) / len(values)
with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
    json.dump({"mse": mse, "examples": len(values)}, f)
