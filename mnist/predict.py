#!/usr/bin/env python3
"""Classify handwritten digits with the best model of //mnist:bzl_search.

Usage::

    bazel run //mnist:predict -- IMAGE.png [IMAGE.png ...]

Each IMAGE is a grayscale picture of one digit, white on black like the
training data (28x28; other sizes are resized, colour is converted to
grayscale). Prints the predicted digit, one line per image, in order.

The model is the search's best model, a `data` dependency of this binary:
`--model` (set in mnist/BUILD to `$(rootpath :bzl_search.best)`) is its path
relative to the root of the runfiles, found next to this script. Relative image
paths are taken from the directory `bazel run` was started in.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

import lib  # noqa: F401  (first: it pins BLAS to one thread before numpy loads)
import numpy as np
from PIL import Image

PROG = "predict.py"
SIDE = 28  # the training images are 28x28
# A digit is a small picture: a larger one is refused before it is decoded
# (a 20000x20000 PNG of a few kilobytes would take gigabytes).
MAX_SIDE = 4096


class ImageError(Exception):
    pass


def runfiles_root() -> Path:
    """The runfiles directory of this workspace: this script is mnist/predict.py in it."""
    return Path(__file__).absolute().parents[1]


_SMALLER = f"a digit image should be small: crop or scale it to about {SIDE}x{SIDE}"


def pixels(path: Path) -> np.ndarray:
    """An image as one row of features, preprocessed like lib.load_split (0..1)."""
    # Pillow's own limit (a DecompressionBombError, later) gives way to ours,
    # checked on the header before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as image:
        width, height = image.size
        if max(width, height) > MAX_SIDE:
            raise ImageError(
                f"it is {width}x{height} pixels, larger than {MAX_SIDE}x{MAX_SIDE}; "
                f"{_SMALLER}"
            )
        gray = image.convert("L")
        if gray.size != (SIDE, SIDE):
            gray = gray.resize((SIDE, SIDE))
        array = np.asarray(gray, dtype=np.float64)
    return array.reshape(1, -1) / 255.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="runfiles path of the model")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG files")
    args = parser.parse_args(argv)

    model_path = runfiles_root() / args.model
    try:
        with open(model_path, "rb") as f:
            model = pickle.load(f)
    except OSError as e:
        print(
            f"{PROG}: error: cannot read the model {model_path}: {e}", file=sys.stderr
        )
        return 1

    # `bazel run` starts the program in its runfiles; the user's paths are
    # relative to where they typed the command.
    cwd = Path(os.environ.get("BUILD_WORKING_DIRECTORY", "."))
    for name in args.images:
        try:
            features = pixels(cwd / name)
        except (OSError, ImageError) as e:
            print(f"{PROG}: error: cannot read the image {name}: {e}", file=sys.stderr)
            return 2
        print(int(model.predict(features)[0]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
