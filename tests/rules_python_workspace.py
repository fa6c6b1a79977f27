"""A workspace that gets its Python packages (and optionally its interpreter) from rules_python 0.9.0.

rules_python comes from ``../shared/third_party/rules_python-0.9.0.tar.gz``
(an ``http_archive`` with a ``file://`` URL); the rule set itself never
depends on it. Its ``pip_parse`` resolves through the machine's package index
as ``python_env`` does (pip reads the machine's configuration:
``isolated = False``). rules_python's own tools (pip, setuptools, wheel, ...)
are wheels its WORKSPACE macros download by URL and sha256; without network,
``tool_wheels`` gets the same files by name through pip, and Bazel takes them
from ``--distdir`` after checking their sha256.

Used by tests/e2e/test_rules_python.py, tests/e2e/test_newer_bazel.py and the
bench (tools/bench/rules_python.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

from bazel_harness import REPO, Workspace

ARCHIVE = REPO.parent / "shared/third_party/rules_python-0.9.0.tar.gz"
SHA256 = "7d83768e703e858883222360421ab38ed28fca318a505c24660b4ec2b9f43058"
PREFIX = "rules_python-0.9.0"

# The pip_parse hub; its pip repositories are `@pypi_<name>`.
HUB = "pypi"


def tool_wheels(directory: Path) -> Path:
    """rules_python's tool wheels (its `_RULE_DEPS`), fetched by name into `directory`."""
    with tarfile.open(ARCHIVE) as tar:
        member = tar.extractfile(f"{PREFIX}/python/pip_install/repositories.bzl")
        assert member is not None
        text = member.read().decode()
    files = re.findall(r'"https://[^"]+/([^/"]+\.whl)"', text)
    assert files, "no wheel URLs in rules_python's pip_install/repositories.bzl"
    directory.mkdir(parents=True, exist_ok=True)
    missing = [f for f in files if not (directory / f).exists()]
    if missing:
        requirements = []
        for name in missing:
            distribution, version = name.split("-")[:2]
            requirements.append(f"{distribution}=={version}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-qq", "--no-deps"]
            + ["--only-binary=:all:", "--dest", str(directory), *requirements],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    return directory


def host_python() -> str:
    """The interpreter `python3` on PATH runs (not a wrapper such as pyenv's shim)."""
    found = shutil.which("python3")
    assert found, "no python3 on PATH"
    return subprocess.run(
        [found, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def lock_blocks(names: set[str] | None = None) -> str:
    """The entries of this checkout's requirements_lock.txt (all, or those of `names`), hashes included."""
    text = (REPO / "requirements_lock.txt").read_text()
    found = list(re.finditer(r"^([A-Za-z0-9._-]+)==", text, re.M))
    out = []
    for match, end in zip(found, [m.start() for m in found[1:]] + [len(text)]):
        if names is None or match.group(1).lower() in names:
            out.append(text[match.start() : end].rstrip() + "\n")
    return "".join(out)


RULES_PYTHON = f"""
load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")

http_archive(
    name = "rules_python",
    sha256 = "{SHA256}",
    strip_prefix = "{PREFIX}",
    url = "file://{ARCHIVE}",
)

load("@rules_python//python:pip.bzl", "pip_parse")

# One repository per distribution of the lock, @{HUB}_<name>; pip reads the
# machine's configuration (its package index), as python_env's pip does.
pip_parse(
    name = "{HUB}",
    isolated = False,
    requirements_lock = "//:pypi_lock.txt",
)

load("@{HUB}//:requirements.bzl", "install_deps")

install_deps()
"""

# The WORKSPACE's last part: where the interpreter comes from.
PYTHON_ENV = """
load("@databazel//databazel:repositories.bzl", "databazel_dependencies")

# bazel-skylib, and @databazel_python with its toolchain (python_env).
databazel_dependencies(requirements_lock = "//:python_lock.txt")
"""

RULES_PYTHON_TOOLCHAIN = """
load("@databazel//databazel:repositories.bzl", "databazel_dependencies")

# bazel-skylib only: the interpreter is rules_python's toolchain, //toolchain.
databazel_dependencies(python_env_name = None)

register_toolchains("//toolchain:host_python")
"""

TOOLCHAIN_BUILD = """
load("@rules_python//python:defs.bzl", "py_runtime", "py_runtime_pair")

py_runtime(
    name = "host_python3",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
    # A py_binary's launcher starts with this line, then runs the interpreter
    # above; Debian has no plain `python` (Bazel's default line).
    stub_shebang = "#!/usr/bin/env python3",
)

py_runtime_pair(
    name = "host_pair",
    py3_runtime = ":host_python3",
)

toolchain(
    name = "host_python",
    toolchain = ":host_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""


def workspace_file(interpreter: str) -> str:
    """The WORKSPACE: rules_python's packages, and the interpreter from `python_env` or `rules_python`."""
    head = f"""
    workspace(name = "rules_python_user")

    local_repository(
        name = "databazel",
        path = "{REPO}",
    )
    """
    tail = PYTHON_ENV if interpreter == "python_env" else RULES_PYTHON_TOOLCHAIN
    return textwrap.dedent(head) + RULES_PYTHON + tail


def create(
    root: Path,
    output_base: Path,
    distdir: Path,
    host_python: str,
    workspace_class: type = Workspace,
) -> Workspace:
    """The workspace, with python_env's toolchain; the caller writes `pypi_lock.txt`."""
    ws = workspace_class.fixture(root, output_base)
    ws.write("WORKSPACE", workspace_file("python_env"))
    rc = (ws.root / ".bazelrc").read_text()
    extra = [
        # rules_python 0.9.0's pip_repository calls struct.to_json(), which
        # Bazel 8 removed (newer rules_python releases do not).
        "common --noincompatible_struct_has_no_methods",
        *(f"{c} --distdir={distdir}" for c in ("build", "fetch", "query", "sync")),
    ]
    ws.write(".bazelrc", rc + "\n".join(extra) + "\n")
    ws.write("BUILD", 'exports_files(["pypi_lock.txt", "python_lock.txt"])\n')
    ws.write(
        "python_lock.txt",
        lock_blocks(
            {
                "numpy",
                "scipy",
                "scikit-learn",
                "joblib",
                "threadpoolctl",
                "narwhals",
                "cloudpickle",
            }
        ),
    )
    ws.write("toolchain/BUILD", TOOLCHAIN_BUILD.format(interpreter=host_python))
    return ws
