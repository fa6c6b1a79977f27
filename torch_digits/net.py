"""What train.py and evaluate.py share: the data, the network, the checkpoint.

The data is the MNIST layout of scikit-learn's 8x8 handwritten digits that
//mnist:prepare_data writes offline (28x28 uint8 images, ``x_train``,
``y_train``, ``x_test``, ``y_test``). Everything runs on the CPU, in one
thread, with PyTorch's deterministic algorithms: the same inputs give
byte-identical checkpoints and metrics.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import torch
from torch import nn

SEED = 0


def setup() -> None:
    """One thread and deterministic kernels (call before any computation)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def load_split(path: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, 28, 28) scaled to [0, 1] and labels (n,) of one split."""
    with np.load(path, allow_pickle=False) as data:
        x, y = data[f"x_{split}"], data[f"y_{split}"]
    images = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    return images, torch.from_numpy(y.astype(np.int64))


def network(width: int) -> nn.Module:
    """A small convolutional network: two strided convolutions and a linear layer."""
    return nn.Sequential(
        nn.Conv2d(1, width, kernel_size=3, stride=2, padding=1),  # 14x14
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1),  # 7x7
        nn.ReLU(),
        nn.MaxPool2d(2),  # 3x3
        nn.Flatten(),
        nn.Linear(2 * width * 9, 10),
    )


def save(path: str, checkpoint: dict[str, object]) -> None:
    """torch.save into memory, then an atomic write.

    Saved to a buffer, the archive's internal name is always ``archive``, not
    derived from the file name, so the bytes depend only on the tensors.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint.")
    with os.fdopen(fd, "wb") as f:
        f.write(buffer.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load(path: str) -> dict[str, object]:
    return torch.load(path, map_location="cpu", weights_only=True)
