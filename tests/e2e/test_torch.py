"""The PyTorch example, built for real in this checkout: `//torch_digits`.

One session output base (the `repo` fixture, shared with test_mnist.py), so
@databazel_torch is installed once. The search is built clean, then after
`bazel clean` the single model `cnn` (the same hyperparameters as one trial)
is built again with Bazel killed during its third epoch: the rebuild trains
only that epoch, and its checkpoints and metrics are byte for byte those of
the search's trial from the first build.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

from bazel_harness import REPO_SANDBOXED, Workspace

TRIAL = "torch_digits/search__lr-0.1__width-8"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trial_files(repo: Workspace) -> dict[int, tuple[str, str]]:
    """Epoch -> (checkpoint digest, metrics digest) of the search's trial."""
    return {
        k: (
            _sha(repo.bin(f"{TRIAL}/model.epoch-{k}.pt")),
            _sha(repo.bin(f"{TRIAL}__eval.epoch-{k}.metrics.json")),
        )
        for k in (1, 2, 3)
    }


def test_pytorch_search_resume_after_kill_and_byte_identical_rebuild(
    repo: Workspace, tmp_path: Path
) -> None:
    first = repo.build("//torch_digits:search", flags=("--jobs=2",))
    # 2 x 2 trials, 3 epochs each, every epoch evaluated (learning_curve).
    assert first.executed("DatabazelTrain") == 12
    assert first.executed("DatabazelEvaluate") == 12
    report = json.loads(repo.bin("torch_digits/search.json").read_text())
    assert len(report["trials"]) == 4
    for trial in report["trials"]:
        assert [p["epoch"] for p in trial["learning_curve"]] == [1, 2, 3]
    assert report["best"]["metrics"]["accuracy"] > 0.8
    reference = _trial_files(repo)
    checkpoint = repo.bin(f"{TRIAL}/model.epoch-3.pt").read_bytes()
    assert checkpoint.startswith(b"PK")  # torch.save's zip archive

    repo.bazel("clean", check=True)
    disk_cache = f"--disk_cache={tmp_path / 'disk_cache'}"
    stderr = tmp_path / "stderr"
    # Sandboxed, so that an epoch (a new interpreter importing torch) takes
    # seconds and the kill lands inside epoch 3; a warm epoch may be over
    # first. What a killed warm worker leaves: tests/e2e/test_hermetic.py.
    client = repo.start(
        "build", disk_cache, *REPO_SANDBOXED, "//torch_digits:cnn_eval", stderr=stderr
    )
    try:
        deadline = time.monotonic() + 600
        while "//torch_digits:cnn, epoch 3" not in stderr.read_text(errors="replace"):
            assert client.poll() is None, stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, "epoch 3 never started"
            time.sleep(0.05)
        server = repo.server_pid()
        assert server is not None
        os.kill(server, signal.SIGKILL)  # Bazel killed during epoch 3
    finally:
        client.kill()
        client.wait()

    again = repo.build(
        "//torch_digits:cnn_eval",
        flags=(disk_cache, "--output_groups=+epoch_metrics", *REPO_SANDBOXED),
    )
    # Epochs 1 and 2 come from the disk cache; only epoch 3 trains again.
    assert again.executed("DatabazelTrain") == 1
    for k, (model_digest, metrics_digest) in reference.items():
        assert _sha(repo.bin(f"torch_digits/cnn/model.epoch-{k}.pt")) == model_digest, k
        assert (
            _sha(repo.bin(f"torch_digits/cnn_eval.epoch-{k}.metrics.json"))
            == metrics_digest
        ), k


def test_mnist_search_does_not_depend_on_pytorch(repo: Workspace) -> None:
    """Nothing of @databazel_torch is in the scikit-learn searches' build graph,
    toolchains included: adding it changed none of their actions."""
    for target in ("//mnist:bzl_search", "//mnist:bzl_epochs"):
        result = repo.bazel(
            "cquery", f'filter("@databazel_torch", deps({target}))', check=True
        )
        assert result.stdout.strip() == "", result.stdout[:2000]
