"""Minimal pure-Python wheels the e2e tests build, for lock files without network."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(
    directory: Path, name: str, version: str, requires: list[str], init: str
) -> Path:
    """`name-version-py3-none-any.whl` with one module, `name` (`__init__.py` is `init`)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": init,
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
        # A requirement of an extra is not a dependency of the target.
        + "Requires-Dist: gamma ; extra == 'fancy'\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record.append(f"{path},sha256={digest.rstrip(b'=').decode()},{len(text)}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name_, text in files.items():
            z.writestr(zipfile.ZipInfo(name_, (2020, 1, 1, 0, 0, 0)), text)
    return path
