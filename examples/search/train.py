"""Trains the example's model: the mean of the training rows, times `scale`."""

import argparse
import json

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--model-output-path", required=True)
parser.add_argument("--hyperparams", required=True)
args = parser.parse_args()

hyperparams = json.loads(args.hyperparams)  # values are strings: {"scale":"2"}
with open(args.data) as f:
    values = [float(line) for line in f]
model = {"mean": sum(values) / len(values), "scale": float(hyperparams["scale"])}
with open(args.model_output_path, "w") as f:
    json.dump(model, f)
