#!/usr/bin/env python3
"""Builds a versioned source archive of databazel and prints the snippets to use it.

    tools/release.py                      # archive of HEAD into dist/
    tools/release.py --url 'https://github.com/ORG/databazel/releases/download/v{version}/{archive}'

The version comes from `module(version = ...)` in MODULE.bazel. The archive is
`git archive` of a commit (HEAD by default), so it holds the committed files
under the prefix `databazel-<version>/`, less those `.gitattributes` marks
`export-ignore`: users get databazel/, MODULE.bazel, LICENSE and README.md. The script prints its sha256, the
WORKSPACE `http_archive` snippet and the MODULE.bazel (bzlmod) snippet, with the
archive's URL: `--url` (a template with `{version}` and `{archive}`) or, by
default, a `file://` URL of the archive just built.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_version(module_bazel: str) -> str:
    """The `version` of the `module(...)` call in a MODULE.bazel file."""
    call = re.search(r"\bmodule\((.*?)\)", module_bazel, re.S)
    version = re.search(r'\bversion\s*=\s*"([^"]+)"', call.group(1)) if call else None
    if not version:
        raise SystemExit("release: MODULE.bazel has no module(version = ...)")
    return version.group(1)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def snippets(version: str, url: str, sha256: str) -> str:
    prefix = f"databazel-{version}"
    integrity = "sha256-" + base64.b64encode(bytes.fromhex(sha256)).decode()
    return f"""\
# WORKSPACE
load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")

http_archive(
    name = "databazel",
    sha256 = "{sha256}",
    strip_prefix = "{prefix}",
    urls = ["{url}"],
)

load("@databazel//databazel:repositories.bzl", "databazel_dependencies")

databazel_dependencies()

# MODULE.bazel (bzlmod; databazel is not in the Bazel Central Registry)
bazel_dep(name = "databazel", version = "{version}")
archive_override(
    module_name = "databazel",
    integrity = "{integrity}",
    strip_prefix = "{prefix}",
    urls = ["{url}"],
)

python_env = use_extension("@databazel//databazel:extensions.bzl", "python_env")
python_env.environment(name = "databazel_python")
use_repo(python_env, "databazel_python")

register_toolchains("@databazel_python//:toolchain")
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="commit to archive")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="directory")
    parser.add_argument("--url", help="URL template with {version} and {archive}")
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="archive the commit even if the working tree has uncommitted changes",
    )
    args = parser.parse_args(argv)

    if not args.allow_dirty and git("status", "--porcelain", "--untracked-files=no"):
        print(
            "release: the working tree has uncommitted changes, which the archive "
            "would not contain; commit them (or pass --allow-dirty)",
            file=sys.stderr,
        )
        return 1
    version = module_version(git("show", f"{args.ref}:MODULE.bazel"))
    name = f"databazel-{version}.tar.gz"
    args.out.mkdir(parents=True, exist_ok=True)
    archive = (args.out / name).resolve()
    git(
        "archive",
        "--format=tar.gz",
        f"--prefix=databazel-{version}/",
        f"--output={archive}",
        args.ref,
    )
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    url = (
        args.url.format(version=version, archive=name) if args.url else archive.as_uri()
    )
    print(f"archive: {archive}")
    print(f"sha256:  {sha256}")
    print()
    print(snippets(version, url, sha256), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
