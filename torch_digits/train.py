#!/usr/bin/env python3
"""Train the digits CNN one epoch per call (databazel's `model(epochs = N)`).

    train.py --data digits.npz --model-output-path OUT --hyperparams '{"lr": "0.05", "width": "8"}' \\
        --epoch K [--init-model-path PREVIOUS]

Epoch 1 builds the network from a fixed seed; epoch K > 1 loads the model's
and the optimizer's state (SGD with momentum) from the checkpoint of epoch
K - 1. Each epoch is one pass over the training images in mini-batches, in an
order drawn from a generator seeded with (SEED, K) only. The checkpoint is a
torch.save of {"model", "optimizer", "epoch", "hyperparams"}.

Hyperparameters: lr (learning rate, > 0, default 0.05), width (channels of the
first convolution, default 8), momentum (default 0.9), batch_size (default 32).
"""

from __future__ import annotations

import argparse
import json
import sys

import net
import torch
from torch import nn

PROG = "train.py"
DEFAULTS = {"lr": "0.05", "width": "8", "momentum": "0.9", "batch_size": "32"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model-output-path", required=True)
    parser.add_argument("--hyperparams", default="{}")
    parser.add_argument("--epoch", type=int, default=1)
    parser.add_argument("--init-model-path")
    args = parser.parse_args(argv)
    given = json.loads(args.hyperparams)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        print(f"{PROG}: error: unknown hyperparameter(s): {unknown}", file=sys.stderr)
        return 2
    hp = dict(DEFAULTS, **given)
    net.setup()

    torch.manual_seed(net.SEED)
    model = net.network(int(hp["width"]))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=float(hp["lr"]), momentum=float(hp["momentum"])
    )
    if args.init_model_path:
        checkpoint = net.load(args.init_model_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])

    images, labels = net.load_split(args.data, "train")
    order = torch.randperm(
        len(labels),
        generator=torch.Generator().manual_seed(net.SEED * 1000 + args.epoch),
    )
    batch = int(hp["batch_size"])
    model.train()
    total = 0.0
    for start in range(0, len(order), batch):
        index = order[start : start + batch]
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images[index]), labels[index])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    net.save(
        args.model_output_path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": args.epoch,
            "hyperparams": hp,
        },
    )
    print(f"{PROG}: epoch {args.epoch}: mean training loss {total / len(order):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
