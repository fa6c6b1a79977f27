"""Tests for mnist/prepare_data.py, and train.py + evaluate.py end to end.

No test touches the network: the "real MNIST" path is served from a local
directory (as a file:// URL or a plain path) with test-supplied MD5 sums, and
the unreachable-mirror case uses http://127.0.0.1:9/ (the discard port, which
refuses connections at once).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import math
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MNIST_DIR = REPO / "mnist"
UNREACHABLE = "http://127.0.0.1:9/"


# The scripts import their helper `lib` from their own directory.
sys.path.insert(0, str(MNIST_DIR))


def _load_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_databazel_mnist_{name}", MNIST_DIR / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pd = _load_module("prepare_data")


# --------------------------------------------------------------------------
# helpers


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """Serialise `arr` in IDX format (big-endian)."""
    arr = np.asarray(arr)
    header = bytes([0, 0, type_code, arr.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def fake_mnist(n_train: int = 5, n_test: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mirror(directory: Path, arrays) -> dict[str, str]:
    """Write gzipped IDX files named like MNIST's; return their MD5s."""
    directory.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for key, name in pd._ARRAY_FILES.items():
        blob = gzip.compress(idx_bytes(arrays[key]), mtime=0)
        (directory / name).write_bytes(blob)
        md5s[name] = hashlib.md5(blob).hexdigest()
    return md5s


def write_dir(directory: Path, arrays) -> Path:
    write_mirror(directory, arrays)
    return directory


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# parse_idx


def test_parse_idx_round_trip_images_and_labels():
    arrays = fake_mnist()
    images = pd.parse_idx(idx_bytes(arrays["x_train"]))
    labels = pd.parse_idx(idx_bytes(arrays["y_train"]))
    assert images.dtype == np.uint8 and images.shape == (5, 28, 28)
    assert labels.dtype == np.uint8 and labels.shape == (5,)
    np.testing.assert_array_equal(images, arrays["x_train"])
    np.testing.assert_array_equal(labels, arrays["y_train"])


def test_parse_idx_accepts_gzip_and_multibyte_types():
    arrays = fake_mnist()
    blob = gzip.compress(idx_bytes(arrays["x_test"]))
    np.testing.assert_array_equal(pd.parse_idx(blob), arrays["x_test"])

    ints = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)
    out = pd.parse_idx(idx_bytes(ints, type_code=0x0C))
    assert out.dtype == np.dtype("int32") and out.dtype.isnative
    np.testing.assert_array_equal(out, ints)


def test_parse_idx_magic_numbers_of_real_mnist():
    images = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    labels = idx_bytes(np.zeros(2, np.uint8))
    assert images[:4] == (0x00000803).to_bytes(4, "big")
    assert labels[:4] == (0x00000801).to_bytes(4, "big")


@pytest.mark.parametrize(
    "magic",
    [
        b"\x08\x03\x00\x00",  # little-endian by mistake
        b"\x00\x01\x08\x03",  # non-zero leading bytes
        b"\x00\x00\x07\x01",  # unknown type code
        b"\x00\x00\x08\x00",  # zero dimensions
        b"PK\x03\x04",  # a zip file, not IDX
    ],
)
def test_parse_idx_rejects_bad_magic(magic):
    data = magic + (5).to_bytes(4, "big") + bytes(5)
    with pytest.raises(pd.IdxFormatError, match="magic"):
        pd.parse_idx(data)


def test_parse_idx_rejects_truncated_files():
    good = idx_bytes(fake_mnist()["x_train"])
    with pytest.raises(pd.IdxFormatError, match="too short"):
        pd.parse_idx(good[:3])
    with pytest.raises(pd.IdxFormatError, match="truncated IDX header"):
        pd.parse_idx(good[:10])  # magic says 3 dims: needs 16 header bytes
    with pytest.raises(pd.IdxFormatError, match=r"truncated IDX data.*3920.*3919"):
        pd.parse_idx(good[:-1])
    with pytest.raises(pd.IdxFormatError, match="truncated IDX data"):
        pd.parse_idx(good[:16])  # header only


def test_parse_idx_rejects_trailing_bytes_and_corrupt_gzip():
    good = idx_bytes(fake_mnist()["y_train"])
    with pytest.raises(pd.IdxFormatError, match="trailing"):
        pd.parse_idx(good + b"\x00")
    blob = gzip.compress(good)
    with pytest.raises(pd.IdxFormatError, match="gzip"):
        pd.parse_idx(blob[: len(blob) // 2])
    with pytest.raises(pd.IdxFormatError, match="gzip"):
        pd.parse_idx(blob[:10] + b"\xff" * 20)


def test_idx_format_error_is_a_value_error():
    assert issubclass(pd.IdxFormatError, ValueError)
    assert issubclass(pd.IdxFormatError, pd.PrepareDataError)


# --------------------------------------------------------------------------
# real-MNIST loading from a local mirror


def test_default_md5s_are_the_published_ones():
    assert pd.MNIST_MD5 == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert pd.DEFAULT_MIRRORS[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert (
        pd.DEFAULT_MIRRORS[1] == "https://storage.googleapis.com/cvdf-datasets/mnist/"
    )


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "directory"])
def test_load_real_mnist_from_local_mirror(tmp_path, as_url):
    arrays = fake_mnist()
    md5s = write_mirror(tmp_path / "mirror", arrays)
    base = (tmp_path / "mirror").as_uri() + "/" if as_url else str(tmp_path / "mirror")
    got = pd.load_real_mnist(mirrors=[base], timeout=2, md5s=md5s)
    assert list(got) == ["x_train", "y_train", "x_test", "y_test"]
    for key, want in arrays.items():
        assert got[key].dtype == np.uint8
        np.testing.assert_array_equal(got[key], want)


def test_load_real_mnist_md5_check_can_be_skipped(tmp_path):
    arrays = fake_mnist()
    write_mirror(tmp_path, arrays)
    got = pd.load_real_mnist(mirrors=[str(tmp_path)], md5s=None)
    np.testing.assert_array_equal(got["y_test"], arrays["y_test"])


def test_load_real_mnist_rejects_bad_md5(tmp_path):
    md5s = write_mirror(tmp_path, fake_mnist())
    md5s["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(pd.DownloadError, match="md5 mismatch") as info:
        pd.load_real_mnist(mirrors=[tmp_path.as_uri()], md5s=md5s)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)


def test_load_real_mnist_checks_published_md5s_by_default(tmp_path):
    write_mirror(tmp_path, fake_mnist())  # not the real files
    with pytest.raises(pd.DownloadError, match="md5 mismatch"):
        pd.load_real_mnist(mirrors=[str(tmp_path)])


def recorded_fetches(monkeypatch) -> list[tuple[str, float]]:
    """Every (location, timeout) prepare_data fetches from now on."""
    calls: list[tuple[str, float]] = []
    real_fetch = pd._fetch

    def recording_fetch(location, timeout):
        calls.append((location, timeout))
        return real_fetch(location, timeout)

    monkeypatch.setattr(pd, "_fetch", recording_fetch)
    return calls


def test_load_real_mnist_tries_mirrors_in_order(monkeypatch, tmp_path):
    arrays = fake_mnist()
    good = tmp_path / "good"
    bad = tmp_path / "bad"
    md5s = write_mirror(good, arrays)
    write_mirror(bad, fake_mnist(seed=1))  # wrong content: md5 mismatch
    missing = str(tmp_path / "missing")
    calls = recorded_fetches(monkeypatch)
    got = pd.load_real_mnist(
        mirrors=[UNREACHABLE, missing, bad.as_uri(), str(good)],
        timeout=2,
        md5s=md5s,
    )
    np.testing.assert_array_equal(got["x_train"], arrays["x_train"])
    # In order, each with the timeout; the unreachable and the missing mirror
    # once (not again for each file), the bad one for every file.
    first, *others = list(pd._ARRAY_FILES.values())
    assert calls == [
        (pd._join(UNREACHABLE, first), 2),
        (pd._join(missing, first), 2),
        (pd._join(bad.as_uri(), first), 2),
        (pd._join(str(good), first), 2),
    ] + [
        (pd._join(mirror, name), 2)
        for name in others
        for mirror in (bad.as_uri(), str(good))
    ]


def test_unreachable_mirror_is_not_retried_for_every_file(monkeypatch, tmp_path):
    md5s = write_mirror(tmp_path, fake_mnist())
    calls = []
    real_fetch = pd._fetch

    def counting_fetch(location, timeout):
        calls.append(location)
        return real_fetch(location, timeout)

    monkeypatch.setattr(pd, "_fetch", counting_fetch)
    pd.load_real_mnist(mirrors=[UNREACHABLE, str(tmp_path)], timeout=2, md5s=md5s)
    assert sum(c.startswith(UNREACHABLE) for c in calls) == 1


def test_load_real_mnist_validates_shapes(tmp_path):
    arrays = fake_mnist()
    arrays["x_test"] = np.zeros((3, 28, 27), np.uint8)
    with pytest.raises(pd.IdxFormatError, match="28x28"):
        pd.load_real_mnist(mirrors=[str(write_dir(tmp_path / "a", arrays))], md5s=None)

    arrays = fake_mnist()
    arrays["y_train"] = np.zeros(4, np.uint8)  # 5 images
    with pytest.raises(pd.IdxFormatError, match="5 images but 4 labels"):
        pd.load_real_mnist(mirrors=[str(write_dir(tmp_path / "b", arrays))], md5s=None)


def test_load_real_mnist_reports_truncated_file(tmp_path):
    write_mirror(tmp_path, fake_mnist())
    name = "train-labels-idx1-ubyte.gz"
    raw = idx_bytes(np.arange(5, dtype=np.uint8))[:-2]
    (tmp_path / name).write_bytes(gzip.compress(raw))
    with pytest.raises(pd.IdxFormatError, match=f"{name}: truncated IDX data"):
        pd.load_real_mnist(mirrors=[str(tmp_path)], md5s=None)


# --------------------------------------------------------------------------
# digits fallback


def test_digits_fallback_layout():
    pytest.importorskip("sklearn")
    arrays = pd.load_digits_as_mnist()
    assert list(arrays) == ["x_train", "y_train", "x_test", "y_test"]
    assert arrays["x_train"].shape == (1437, 28, 28)
    assert arrays["y_train"].shape == (1437,)
    assert arrays["x_test"].shape == (360, 28, 28)
    assert arrays["y_test"].shape == (360,)
    for arr in arrays.values():
        assert arr.dtype == np.uint8
        assert arr.flags.c_contiguous
    x = np.concatenate([arrays["x_train"], arrays["x_test"]])
    assert x.min() == 0 and x.max() == 255
    # 2-pixel zero border, 3x3 blocks inside.
    assert not x[:, :2].any() and not x[:, -2:].any()
    assert not x[:, :, :2].any() and not x[:, :, -2:].any()
    inner = x[:, 2:26, 2:26]
    np.testing.assert_array_equal(
        inner, np.repeat(np.repeat(inner[:, ::3, ::3], 3, 1), 3, 2)
    )
    # Stratified: every class in both splits, in similar proportions.
    train_counts = np.bincount(arrays["y_train"], minlength=10)
    test_counts = np.bincount(arrays["y_test"], minlength=10)
    assert len(train_counts) == 10 and len(test_counts) == 10
    assert train_counts.min() > 0 and test_counts.min() > 0
    np.testing.assert_allclose(test_counts / train_counts, 360 / 1437, atol=0.02)


def test_digits_fallback_matches_sklearn_pixels():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    digits = sklearn_datasets.load_digits()
    arrays = pd.load_digits_as_mnist()
    # Pixel value v in 0..16 becomes round(v * 255 / 16); 16 -> 255.
    values = set(np.unique(arrays["x_train"]).tolist())
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert values <= allowed
    assert len(arrays["y_train"]) + len(arrays["y_test"]) == len(digits.target)


def test_digits_fallback_is_deterministic():
    pytest.importorskip("sklearn")
    a = pd.load_digits_as_mnist()
    b = pd.load_digits_as_mnist()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


# --------------------------------------------------------------------------
# writing


def test_write_npz_is_byte_identical_and_loadable(tmp_path, monkeypatch):
    arrays = fake_mnist()
    pd.write_npz(tmp_path / "a.npz", arrays)
    # A later wall-clock time must not change the bytes (np.savez would).
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86400 * 400 + 7)
    pd.write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()

    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert data.files == ["x_train", "y_train", "x_test", "y_test"]
        for key, want in arrays.items():
            assert data[key].dtype == want.dtype
            np.testing.assert_array_equal(data[key], want)
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_DEFLATED


def test_write_npz_is_atomic_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "sub" / "dir" / "mnist.npz"
    pd.write_npz(out, fake_mnist())
    first = out.read_bytes()
    assert sorted(os.listdir(out.parent)) == ["mnist.npz"]
    with pytest.raises(ValueError, match="object dtype"):
        pd.write_npz(out, {"x_train": np.array([object()], dtype=object)})
    assert out.read_bytes() == first  # the old file survives a failed write
    assert sorted(os.listdir(out.parent)) == ["mnist.npz"]


def test_prepare_is_idempotent_without_force(monkeypatch, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "mnist.npz"
    message = pd.prepare(out, source="digits")
    assert message.startswith(
        f"wrote {out} from scikit-learn's bundled handwritten digits"
    )
    assert "1437 train / 360 test" in message
    before = (out.read_bytes(), out.stat().st_mtime_ns)

    calls = recorded_fetches(monkeypatch)
    again = pd.prepare(out, source="mnist", mirrors=[UNREACHABLE])
    assert calls == []  # nothing fetched
    assert "already exists" in again and "--force" in again
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before

    forced = pd.prepare(out, source="digits", force=True)
    assert forced.startswith("wrote")
    assert out.read_bytes() == before[0]  # same source, same bytes


def test_prepare_digits_twice_is_byte_identical(tmp_path):
    pytest.importorskip("sklearn")
    pd.prepare(tmp_path / "a.npz", source="digits")
    pd.prepare(tmp_path / "b.npz", source="digits")
    assert sha256(tmp_path / "a.npz") == sha256(tmp_path / "b.npz")


def test_prepare_real_mnist_from_local_mirror(tmp_path):
    arrays = fake_mnist(n_train=7, n_test=4)
    md5s = write_mirror(tmp_path / "mirror", arrays)
    out = tmp_path / "out" / "mnist.npz"
    message = pd.prepare(
        out, source="auto", mirrors=[str(tmp_path / "mirror")], md5s=md5s
    )
    assert message == f"wrote {out} from real MNIST (7 train / 4 test)"
    with np.load(out) as data:
        np.testing.assert_array_equal(data["x_train"], arrays["x_train"])


def test_auto_falls_back_to_digits_when_mirror_unreachable(monkeypatch, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "mnist.npz"
    calls = recorded_fetches(monkeypatch)
    message = pd.prepare(out, source="auto", timeout=2, mirrors=[UNREACHABLE])
    # One try, with the timeout, then the fallback.
    assert calls == [(pd._join(UNREACHABLE, next(iter(pd._ARRAY_FILES.values()))), 2)]
    assert (
        "bundled handwritten digits (offline fallback; 1437 train / 360 test" in message
    )
    assert "real MNIST unavailable" in message
    assert "\n" not in message
    with np.load(out) as data:
        assert data["x_train"].shape == (1437, 28, 28)
    # Same bytes as asking for digits directly.
    pd.prepare(tmp_path / "digits.npz", source="digits")
    assert sha256(out) == sha256(tmp_path / "digits.npz")


def test_source_mnist_does_not_fall_back(tmp_path):
    with pytest.raises(pd.DownloadError, match="could not fetch"):
        pd.prepare(
            tmp_path / "mnist.npz", source="mnist", timeout=2, mirrors=[UNREACHABLE]
        )
    assert not (tmp_path / "mnist.npz").exists()


def test_main_cli(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "mnist.npz"
    assert pd.main(["--output", str(out), "--source", "digits"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        (
            f"prepare_data: wrote {out} from scikit-learn's bundled handwritten "
            "digits (8x8 upscaled to 28x28; 1437 train / 360 test)"
        )
    ]
    assert pd.main(["--output", str(out)]) == 0
    assert "already exists" in capsys.readouterr().out

    code = pd.main(
        [
            "--output",
            str(tmp_path / "x.npz"),
            "--source",
            "mnist",
            "--mirror",
            UNREACHABLE,
        ]
    )
    assert code == 1
    assert "prepare_data: error: could not fetch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        pd.main(["--output", str(out), "--timeout", "-1"])
    assert info.value.code == 2


# --------------------------------------------------------------------------
# train.py + evaluate.py as subprocesses


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    pytest.importorskip("sklearn")
    arrays = pd.load_digits_as_mnist()
    small = {
        "x_train": arrays["x_train"][:200],
        "y_train": arrays["y_train"][:200],
        "x_test": arrays["x_test"][:50],
        "y_test": arrays["y_test"][:50],
    }
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    pd.write_npz(path, small)
    return path


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    # Run from an unrelated directory so nothing depends on the cwd.
    return subprocess.run(
        [sys.executable, str(MNIST_DIR / name), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )


def train_and_evaluate(
    data: Path, workdir: Path, hyperparams: str
) -> tuple[Path, Path]:
    model = workdir / "model.pkl"
    metrics_dir = workdir / "eval"
    train = run_script(
        "train.py",
        "--data",
        str(data),
        "--model-output-path",
        str(model),
        "--hyperparams",
        hyperparams,
    )
    assert train.returncode == 0, train.stderr
    assert model.is_file()
    evaluate = run_script(
        "evaluate.py",
        "--model-path",
        str(model),
        "--data-path",
        str(data),
        "--output-dir",
        str(metrics_dir),
    )
    assert evaluate.returncode == 0, evaluate.stderr
    return model, metrics_dir


def test_train_then_evaluate_is_deterministic(tiny_npz, tmp_path):
    hyperparams = json.dumps({"C": "1.0", "max_iter": "50"})
    runs = [
        train_and_evaluate(tiny_npz, tmp_path / f"run{i}", hyperparams) for i in (1, 2)
    ]
    (model1, eval1), (model2, eval2) = runs

    with open(model1, "rb") as f:
        assert f.read(2) == b"\x80\x05"  # pickle protocol 5
    with open(model1, "rb") as f:
        model = pickle.load(f)
    assert type(model).__name__ == "LogisticRegression"
    assert model.C == 1.0 and model.max_iter == 50

    metrics = json.loads((eval1 / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "macro_f1", "log_loss"}
    for value in metrics.values():
        assert isinstance(value, float) and math.isfinite(value)
    assert 0.5 < metrics["accuracy"] <= 1.0
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert metrics["log_loss"] >= 0.0

    matrix = (eval1 / "confusion_matrix.csv").read_text().splitlines()
    assert matrix[0].startswith("true\\pred,")
    assert sum(int(v) for row in matrix[1:] for v in row.split(",")[1:]) == 50

    assert sha256(model1) == sha256(model2)
    for name in ("metrics.json", "confusion_matrix.csv"):
        assert sha256(eval1 / name) == sha256(eval2 / name)


def test_train_accepts_tol_and_json_numbers(tiny_npz, tmp_path):
    model, _ = train_and_evaluate(
        tiny_npz, tmp_path, json.dumps({"C": 0.1, "max_iter": 20, "tol": "1e-3"})
    )
    with open(model, "rb") as f:
        fitted = pickle.load(f)
    assert (fitted.C, fitted.max_iter, fitted.tol) == (0.1, 20, 0.001)


@pytest.mark.parametrize(
    "hyperparams, message",
    [
        (
            '{"C": "1.0", "learning_rate": "0.1"}',
            "unknown hyperparameter(s): learning_rate",
        ),
        ('{"C": "-1"}', "'C' must be finite and > 0"),
        ('{"C": "nan"}', "'C' must be finite and > 0"),
        ('{"max_iter": "1.5"}', "'max_iter': not an integer"),
        ('{"max_iter": true}', "must be a string"),
        ('["C", "1.0"]', "must be a JSON object"),
        ("{C: 1}", "not valid JSON"),
    ],
)
def test_train_rejects_bad_hyperparams(tiny_npz, tmp_path, hyperparams, message):
    model = tmp_path / "model.pkl"
    result = run_script(
        "train.py",
        "--data",
        str(tiny_npz),
        "--model-output-path",
        str(model),
        "--hyperparams",
        hyperparams,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not model.exists()
