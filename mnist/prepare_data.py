#!/usr/bin/env python3
"""Write the MNIST data set as ``mnist.npz`` in the Keras layout.

The file holds four uint8 arrays: ``x_train`` (n, 28, 28), ``y_train`` (n,),
``x_test`` (m, 28, 28) and ``y_test`` (m,).

Sources:

``mnist``
    Download the four real MNIST IDX files from public mirrors, check their
    MD5 sums and parse them.
``digits``
    Build the same layout, without any network access, from scikit-learn's
    bundled 8x8 handwritten digits: scale 0..16 to 0..255, upscale every
    pixel to a 3x3 block (24x24) and pad 2 pixels on each side (28x28).
    Split 80/20, stratified, with a fixed seed.
``auto`` (default)
    Try ``mnist`` with a short timeout and fall back to ``digits`` if the
    real data cannot be fetched.

The output is written atomically and deterministically: the same source
gives a byte-identical file on every run. If the output already exists it is
left alone unless ``--force`` is given.

Usage::

    prepare_data.py --output mnist/data/mnist.npz [--source auto|mnist|digits]
                    [--timeout SECONDS] [--force] [--mirror URL ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import os
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping, Sequence

import lib
import numpy as np

#: Mirrors tried in order. Each is a base URL (or a local directory) that
#: holds the four files named in MNIST_MD5.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: File name -> expected MD5 of the gzip file as published.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Output array name -> MNIST file it comes from, in Keras order.
_ARRAY_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

DEFAULT_TIMEOUT = 10.0

# The largest MNIST file is ~9.9 MB; refuse anything absurdly larger.
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

# IDX type code (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

# Fixed zip member timestamp (the earliest a zip file can record), so that
# the npz does not depend on when it was written.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


class PrepareDataError(Exception):
    """The data could not be obtained or was malformed."""


class IdxFormatError(PrepareDataError, ValueError):
    """Bytes that are not a well-formed IDX file."""


class DownloadError(PrepareDataError):
    """A file could not be fetched intact from any mirror.

    str() lists every mirror's failure; `summary` is a short form without
    URLs, for one-line messages.
    """

    def __init__(self, message: str, summary: str | None = None):
        super().__init__(message)
        self.summary = summary if summary is not None else message


# --------------------------------------------------------------------------
# IDX parsing


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (raw, or gzip-compressed) into a numpy array.

    IDX layout: two zero bytes, a type byte (0x08 = unsigned byte, ...), a
    byte holding the number of dimensions, that many big-endian uint32
    sizes, then the data in C order, big-endian. MNIST images have magic
    0x00000803 (uint8, 3 dims), labels 0x00000801 (uint8, 1 dim).

    Returns an array in native byte order. Raises IdxFormatError with a
    message saying what is wrong for bad magic, truncated or oversized data.
    """
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxFormatError(f"corrupt gzip stream: {e}") from None

    if len(data) < 4:
        raise IdxFormatError(
            f"truncated IDX file: {len(data)} bytes, too short for the "
            "4-byte magic number"
        )
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            f"bad IDX magic number 0x{magic:08X}: expected 0x0000TTNN with "
            "type TT in {"
            + ", ".join(f"0x{t:02X}" for t in _IDX_DTYPES)
            + "} and NN >= 1 dimensions (MNIST: 0x00000803 images, "
            "0x00000801 labels)"
        )

    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(
            f"truncated IDX header: magic 0x{magic:08X} announces {ndim} "
            f"dimension(s), needing {header_len} header bytes, but the file "
            f"has only {len(data)}"
        )
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = dtype.itemsize
    for d in shape:
        expected *= d
    actual = len(data) - header_len
    if actual < expected:
        raise IdxFormatError(
            f"truncated IDX data: shape {shape} of {dtype.name} needs "
            f"{expected} data bytes, file has {actual}"
        )
    if actual > expected:
        raise IdxFormatError(
            f"corrupt IDX file: shape {shape} of {dtype.name} needs "
            f"{expected} data bytes, file has {actual} ({actual - expected} "
            "trailing bytes)"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    # Native byte order, writable, owning its memory.
    return arr.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------
# Downloading real MNIST


def _join(base: str, name: str) -> str:
    """URL (or path) of file `name` on mirror `base`."""
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return os.path.join(base, name)


def _fetch(location: str, timeout: float) -> bytes:
    """Read a URL (http, https, file) or a local path into memory."""
    if "://" not in location:
        with open(location, "rb") as f:
            data = f.read(_MAX_DOWNLOAD_BYTES + 1)
    else:
        with urllib.request.urlopen(location, timeout=timeout) as resp:
            data = resp.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(data) > _MAX_DOWNLOAD_BYTES:
        raise DownloadError(
            f"{location}: larger than {_MAX_DOWNLOAD_BYTES} bytes; refusing"
        )
    return data


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(
        e, urllib.error.HTTPError
    ):
        return f"{type(e).__name__}: {e.reason}"
    return f"{type(e).__name__}: {e}"


def download_mnist_files(
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    timeout: float = DEFAULT_TIMEOUT,
    md5s: Mapping[str, str] | None = MNIST_MD5,
    names: Sequence[str] = tuple(MNIST_MD5),
) -> dict[str, bytes]:
    """Fetch the named files, each from the first mirror that serves it intact.

    `md5s` maps file name to expected MD5 hex digest; a file whose digest
    differs is rejected and the next mirror is tried. Pass ``md5s=None`` to
    skip verification (tests only). A mirror that fails at the connection
    level (DNS, refused, timeout, ...) is not asked again for later files,
    so an unreachable mirror costs at most one timeout.
    """
    if not mirrors:
        raise DownloadError("no MNIST mirrors given")
    dead: set[str] = set()
    out: dict[str, bytes] = {}
    for name in names:
        errors: list[str] = []
        reasons: list[str] = []  # distinct, without URLs
        for base in mirrors:
            location = _join(base, name)
            if base in dead:
                errors.append(f"{location}: skipped, mirror unreachable")
                continue
            try:
                data = _fetch(location, timeout)
            except urllib.error.HTTPError as e:
                # The server answered; it may still have the other files.
                errors.append(f"{location}: {_describe(e)}")
                reasons.append(_describe(e))
                continue
            except (OSError, ValueError, http.client.HTTPException, DownloadError) as e:
                # OSError covers URLError, timeouts, refused connections and
                # missing local files; ValueError malformed URLs;
                # HTTPException truncated or garbled responses.
                dead.add(base)
                errors.append(f"{location}: {_describe(e)}")
                reasons.append(_describe(e))
                continue
            if md5s is not None:
                want = md5s.get(name)
                got = hashlib.md5(data, usedforsecurity=False).hexdigest()
                if want is None:
                    raise DownloadError(f"no expected MD5 given for {name}")
                if got != want.lower():
                    errors.append(
                        f"{location}: md5 mismatch: got {got}, expected {want}"
                    )
                    reasons.append(f"md5 mismatch for {name}")
                    continue
            out[name] = data
            break
        else:
            raise DownloadError(
                f"could not fetch {name} from any mirror: " + "; ".join(errors),
                summary="; ".join(dict.fromkeys(reasons)),
            )
    return out


def load_real_mnist(
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    timeout: float = DEFAULT_TIMEOUT,
    md5s: Mapping[str, str] | None = MNIST_MD5,
) -> dict[str, np.ndarray]:
    """Download, verify and parse real MNIST into the Keras layout.

    Returns {"x_train", "y_train", "x_test", "y_test"} as uint8 arrays.
    Raises DownloadError if a file cannot be fetched intact and
    IdxFormatError if a file does not parse into the expected shape.
    """
    files = download_mnist_files(mirrors, timeout, md5s, tuple(_ARRAY_FILES.values()))
    arrays: dict[str, np.ndarray] = {}
    for key, name in _ARRAY_FILES.items():
        try:
            arr = parse_idx(files[name])
        except IdxFormatError as e:
            raise IdxFormatError(f"{name}: {e}") from None
        want_ndim = 3 if key.startswith("x_") else 1
        if arr.dtype != np.uint8 or arr.ndim != want_ndim:
            raise IdxFormatError(
                f"{name}: expected uint8 with {want_ndim} dimension(s), got "
                f"{arr.dtype} with shape {arr.shape}"
            )
        if want_ndim == 3 and arr.shape[1:] != (28, 28):
            raise IdxFormatError(f"{name}: expected 28x28 images, got {arr.shape[1:]}")
        if want_ndim == 1 and arr.size and int(arr.max()) > 9:
            raise IdxFormatError(f"{name}: label {int(arr.max())} outside 0..9")
        arrays[key] = arr
    for split in ("train", "test"):
        nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if nx != ny:
            raise IdxFormatError(f"{split} split: {nx} images but {ny} labels")
    return arrays


# --------------------------------------------------------------------------
# Offline fallback: scikit-learn's digits


def load_digits_as_mnist() -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images) in the MNIST layout.

    Pixels 0..16 are scaled to 0..255, each pixel becomes a 3x3 block
    (8x8 -> 24x24) and 2 zero pixels are padded on every side (28x28).
    The split is stratified, 20% test, random_state=0: 1437 train / 360
    test. Needs no network access.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0))
    images = np.clip(images, 0, 255).astype(np.uint8)
    images = np.kron(images, np.ones((1, 3, 3), dtype=np.uint8))  # (n, 24, 24)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # (n, 28, 28)
    labels = np.asarray(digits.target).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels
    )
    return {
        "x_train": np.ascontiguousarray(x_train),
        "y_train": np.ascontiguousarray(y_train),
        "x_test": np.ascontiguousarray(x_test),
        "y_test": np.ascontiguousarray(y_test),
    }


# --------------------------------------------------------------------------
# Writing


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise `arrays` as a deflate-compressed .npz, deterministically.

    np.savez_compressed stamps every member with the current time; here each
    member gets a fixed timestamp and permissions, so equal arrays always
    give equal bytes. The result loads with np.load(allow_pickle=False).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"bad array name {name!r}")
            arr = np.ascontiguousarray(np.asarray(arr))
            if arr.dtype.hasobject:
                raise ValueError(f"array {name!r} has object dtype; refusing to pickle")
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever platform writes it
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` to `path` as a deterministic .npz, atomically.

    The bytes go to a temporary file in the same directory, which is then
    renamed over `path`, so readers never see a partial file.
    """
    lib.write_bytes_atomic(path, npz_bytes(arrays))


# --------------------------------------------------------------------------
# Driver


def _counts(arrays: Mapping[str, np.ndarray]) -> str:
    return f"{len(arrays['y_train'])} train / {len(arrays['y_test'])} test"


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prepare(
    output: str | os.PathLike,
    source: str = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    md5s: Mapping[str, str] | None = MNIST_MD5,
) -> str:
    """Write the data set to `output`; return a one-line description.

    If `output` exists and `force` is false nothing is read, fetched or
    written. Raises PrepareDataError (source "mnist") or ImportError
    (no scikit-learn for "digits") on failure.
    """
    if source not in ("auto", "mnist", "digits"):
        raise ValueError(f"unknown source {source!r}")
    output = os.fspath(output)
    if os.path.exists(output) and not force:
        return f"{output} already exists; left unchanged (use --force to rebuild)"

    if source in ("auto", "mnist"):
        try:
            arrays = load_real_mnist(mirrors, timeout, md5s)
        except PrepareDataError as e:
            if source == "mnist":
                raise
            why = e.summary if isinstance(e, DownloadError) else str(e)
            arrays = load_digits_as_mnist()
            desc = (
                "scikit-learn's bundled handwritten digits (offline fallback; "
                f"{_counts(arrays)}; real MNIST unavailable: {_shorten(why)})"
            )
        else:
            desc = f"real MNIST ({_counts(arrays)})"
    else:
        arrays = load_digits_as_mnist()
        desc = (
            "scikit-learn's bundled handwritten digits (8x8 upscaled to 28x28; "
            f"{_counts(arrays)})"
        )
    write_npz(output, arrays)
    return f"wrote {output} from {desc}"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Write MNIST (or an offline stand-in) as a Keras-layout npz.",
    )
    parser.add_argument("--output", required=True, help="path of the .npz to write")
    parser.add_argument(
        "--source",
        choices=("auto", "mnist", "digits"),
        default="auto",
        help="auto: real MNIST, else scikit-learn digits (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        help="seconds per network request (default: %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if --output exists"
    )
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="MNIST mirror base URL or directory, tried in the order given "
        "(default: " + ", ".join(DEFAULT_MIRRORS) + ")",
    )
    args = parser.parse_args(argv)
    mirrors = tuple(args.mirror) if args.mirror else DEFAULT_MIRRORS
    try:
        message = prepare(args.output, args.source, args.timeout, args.force, mirrors)
    except (PrepareDataError, ImportError, OSError) as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        return 1
    print(f"prepare_data: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
