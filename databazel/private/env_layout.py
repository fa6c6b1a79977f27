"""Lay out an installed virtual environment as one Bazel target per distribution.

Run by the ``python_env`` repository rule with the environment's own
interpreter, after ``pip install`` (pip's vendored ``packaging`` evaluates the
environment markers of ``Requires-Dist``)::

    venv/bin/python3 env_layout.py VENV REPO_NAME EXCLUDED,... > layout.json

It prints one JSON object::

    {"site_packages": "venv/lib/python3.11/site-packages",
     "distributions": {"scikit-learn": {"version": "1.9.1",
                                        "srcs": [...], "data": [...],
                                        "deps": ["joblib", "numpy", ...],
                                        "modules": ["sklearn"]}, ...}}

Names are PEP 503 normalised (lower case, runs of ``-_.`` become ``-``).  Every
file under site-packages is given to the distribution whose ``RECORD`` lists
it; bytecode compiled later goes with its source, and a file no ``RECORD``
lists goes with the distribution that owns its nearest listed directory.  The
repository rule turns the object into ``py_library`` targets (python_env.bzl).
"""

from __future__ import annotations

import csv
import email.parser
import json
import os
import re
import sys
from pathlib import PurePosixPath


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name: ``Scikit_Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(dist_info: str) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) from a .dist-info directory."""
    with open(os.path.join(dist_info, "METADATA"), encoding="utf-8") as f:
        headers = email.parser.HeaderParser().parse(f)
    return (
        str(headers.get("Name", "")),
        str(headers.get("Version", "")),
        [str(r) for r in headers.get_all("Requires-Dist") or []],
    )


def _required_names(requires: list[str]) -> list[str]:
    """Names of the distributions required without extras in this environment."""
    try:
        from pip._vendor.packaging.requirements import Requirement
    except ImportError:  # no pip: take every requirement without an extra marker
        return sorted(
            {
                normalize(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0])
                for r in requires
                if "extra" not in r.partition(";")[2]
            }
        )
    names = set()
    for text in requires:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.add(normalize(req.name))
    return sorted(names)


def record_paths(dist_info: str) -> list[str]:
    """Paths the distribution's RECORD lists, relative to site-packages."""
    path = os.path.join(dist_info, "RECORD")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [row[0] for row in csv.reader(f) if row and not row[0].startswith("..")]


def module_names(paths: list[str]) -> list[str]:
    """Top-level import names among site-packages-relative paths."""
    names = set()
    for path in paths:
        first = PurePosixPath(path).parts[0]
        if first.endswith((".dist-info", ".libs", ".pth", ".data")):
            continue
        if first == "__pycache__":
            continue
        if len(PurePosixPath(path).parts) > 1:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", first):
                names.add(first)
        elif first.endswith(".py") or first.endswith(".so"):
            names.add(first.split(".", 1)[0])
    return sorted(names)


def layout(venv: str, excluded: set[str]) -> dict[str, object]:
    lib = os.path.join(venv, "lib")
    site_rel = next(
        os.path.join("lib", d, "site-packages")
        for d in sorted(os.listdir(lib))
        if os.path.isdir(os.path.join(lib, d, "site-packages"))
    )
    site = os.path.join(venv, site_rel)
    owner: dict[str, str] = {}  # site-packages-relative file -> distribution
    dirs: dict[str, set[str]] = {}  # directory -> distributions listing files in it
    dists: dict[str, dict[str, object]] = {}
    for entry in sorted(os.listdir(site)):
        if not entry.endswith(".dist-info"):
            continue
        name, version, requires = _metadata(os.path.join(site, entry))
        key = normalize(name)
        if key in excluded:
            continue
        paths = record_paths(os.path.join(site, entry))
        dists[key] = {
            "version": version,
            "requires": _required_names(requires),
            "modules": module_names(paths),
        }
        for path in paths:
            owner[path] = key
            parent = PurePosixPath(path).parent
            while str(parent) != ".":
                dirs.setdefault(str(parent), set()).add(key)
                parent = parent.parent
    files: dict[str, list[str]] = {key: [] for key in dists}
    for root, subdirs, names in os.walk(site):
        subdirs.sort()
        for fname in sorted(names):
            rel = os.path.relpath(os.path.join(root, fname), site)
            if _holds_environment_path(rel):
                continue
            dist = owner.get(rel) or _owner_of_unlisted(rel, owner, dirs)
            if dist is not None:
                files[dist].append(rel)
    prefix = os.path.relpath(site, os.path.dirname(venv.rstrip("/")) or ".")
    result: dict[str, object] = {}
    for key, info in sorted(dists.items()):
        rels = files[key]
        result[key] = {
            "version": info["version"],
            "srcs": [f"{prefix}/{r}" for r in rels if r.endswith(".py")],
            "data": [f"{prefix}/{r}" for r in rels if not r.endswith(".py")],
            # Only requirements installed here: pip installs with --no-deps.
            "deps": [d for d in info["requires"] if d in dists and d != key],  # type: ignore[attr-defined]
            "modules": info["modules"],
        }
    return {"site_packages": prefix, "distributions": result}


def _holds_environment_path(rel: str) -> bool:
    """Whether a site-packages file depends on where the environment lies.

    A RECORD holds the sha256 of the distribution's console scripts, whose
    first line names the environment's interpreter by its absolute path: as an
    input it would give every action another key in every output base, so no
    disk or remote cache would be shared between checkouts. Nothing imports it.
    """
    path = PurePosixPath(rel)
    return path.name == "RECORD" and path.parent.name.endswith(".dist-info")


def _owner_of_unlisted(
    rel: str, owner: dict[str, str], dirs: dict[str, set[str]]
) -> str | None:
    """The distribution an unlisted file belongs to (bytecode, pruned leftovers)."""
    path = PurePosixPath(rel)
    if path.parent.name == "__pycache__" and path.suffix == ".pyc":
        source = path.parent.parent / (path.name.split(".", 1)[0] + ".py")
        return owner.get(str(source))
    parent = path.parent
    while str(parent) != ".":
        candidates = dirs.get(str(parent), set())
        if len(candidates) == 1:
            return next(iter(candidates))
        if candidates:
            return None  # a directory several distributions share
        parent = parent.parent
    return None


def main(argv: list[str]) -> int:
    venv, excluded = argv[1], argv[2] if len(argv) > 2 else ""
    data = layout(venv, {normalize(n) for n in excluded.split(",") if n})
    json.dump(data, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
