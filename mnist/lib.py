"""Helpers shared by train.py and evaluate.py.

Imported as a top-level module (``import lib``) from scripts in this
directory; it has no package of its own.
"""

from __future__ import annotations

import os
import tempfile

# Single-threaded BLAS/OpenMP, set before numpy is imported (so import this
# module first): multi-threaded reductions may sum in a different order from
# run to run, and the example's results must be byte-identical.
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402  (after the thread settings above)

SPLITS = ("train", "test")


def load_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a Keras-layout mnist.npz.

    Returns (X, y): X float64 of shape (n, 784) with pixels scaled from
    0..255 to [0, 1], y int64 of shape (n,).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    x_key, y_key = f"x_{split}", f"y_{split}"
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in (x_key, y_key) if k not in data.files]
        if missing:
            raise ValueError(
                f"{os.fspath(path)}: missing array(s) {', '.join(missing)}; "
                f"has {', '.join(sorted(data.files)) or 'none'}"
            )
        x = data[x_key]
        y = data[y_key]
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"{os.fspath(path)}: {x_key} shape {x.shape} and {y_key} shape "
            f"{y.shape} do not describe the same number of examples"
        )
    X = x.reshape(len(x), -1).astype(np.float64) / 255.0
    return X, y.astype(np.int64)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
