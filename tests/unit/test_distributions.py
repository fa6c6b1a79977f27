"""Tests for databazel/private/distributions.py and the undeclared-import message.

An output base laid out as Bazel's, with a python_env repository
(`modules.json`), rules_python 0.9.0's hub `@pypi` and one of its pip
repositories fetched (scikit-learn) and one not (matplotlib).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import distributions
import pytest
import script_errors

HUB = """\
load("@rules_python//python/pip_install:pip_repository.bzl", "whl_library")

all_requirements = ["@pypi_matplotlib//:pkg", "@pypi_scikit_learn//:pkg"]

_packages = [('pypi_matplotlib', 'matplotlib==3.11.2     --hash=sha256:00'), ('pypi_scikit_learn', 'scikit-learn==1.9.1     --hash=sha256:11')]
_config = {}

def requirement(name):
    return "@pypi_" + _clean_name(name) + "//:pkg"
"""


def _output_base(tmp_path: Path) -> Path:
    base = tmp_path / "output_base"
    external = base / "external"
    (base / "execroot/ws").mkdir(parents=True)
    env = external / "env"
    env.mkdir(parents=True)
    (env / "modules.json").write_text(
        json.dumps({"repository": "env", "modules": {"sklearn": "scikit-learn"}})
    )
    (external / "pypi").mkdir()
    (external / "pypi/requirements.bzl").write_text(HUB)
    dist_info = external / "pypi_scikit_learn/scikit_learn-1.9.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: scikit-learn\n")
    (dist_info / "RECORD").write_text(
        "sklearn/__init__.py,sha256=x,1\nscikit_learn.libs/libgomp.so,,\n"
        "scikit_learn-1.9.1.dist-info/RECORD,,\n"
    )
    return base


@pytest.fixture
def in_execroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The runner running unsandboxed: its working directory is the execroot."""
    base = _output_base(tmp_path)
    monkeypatch.chdir(base / "execroot/ws")
    return base


def test_pip_repositories_fetched_or_listed_by_their_hub(in_execroot: Path) -> None:
    found = distributions.index(str(in_execroot / "external"))
    assert found["sklearn"] == [
        distributions.Provider("@env//:scikit-learn", "scikit-learn", "env", "env"),
        distributions.Provider(
            "@pypi_scikit_learn//:pkg", "scikit-learn", "pypi", "pypi_scikit_learn"
        ),
    ]
    # Not fetched (no build needed it yet): known from the hub's list, by name.
    assert found["matplotlib"] == [
        distributions.Provider(
            "@pypi_matplotlib//:pkg", "matplotlib", "pypi", "pypi_matplotlib"
        )
    ]
    assert "scikit_learn" not in found  # the .libs directory is no module


def test_the_hub_the_target_already_uses_comes_first(in_execroot: Path) -> None:
    pip = ["pkg", "external/pypi_scikit_learn", "external/pypi_matplotlib"]
    env = ["pkg", "external/env/venv/lib/python3.11/site-packages"]
    assert [p.label for p in distributions.providers("sklearn", pip)[0]] == [
        "@pypi_scikit_learn//:pkg",
        "@env//:scikit-learn",
    ]
    assert [p.label for p in distributions.providers("sklearn", env)[0]] == [
        "@env//:scikit-learn",
        "@pypi_scikit_learn//:pkg",
    ]


def test_the_message_names_the_label_and_the_requirement(in_execroot: Path) -> None:
    tail = "Traceback ...\nModuleNotFoundError: No module named 'matplotlib.pyplot'"
    assert script_errors.missing_module_hint(tail, ["external/pypi_scikit_learn"]) == (
        "The script imports `matplotlib`, which no entry of the target's `deps` "
        'provides: add "@pypi_matplotlib//:pkg" (distribution matplotlib, '
        'requirement("matplotlib") in @pypi//:requirements.bzl) to `deps`.'
    )
    unknown = "ModuleNotFoundError: No module named 'nothere'"
    assert script_errors.missing_module_hint(unknown) == (
        "The script imports `nothere`, which is in none of its `deps`: add the "
        "py_library that provides it to the target's `deps` (no distribution of "
        "@env or @pypi provides it: a package must also be in the requirements "
        "lock of its repository)."
    )
    assert script_errors.missing_module_hint("ValueError: no") == ""


def test_found_from_inside_a_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sandbox links each input to `<execroot>/<its path>`, this module among them."""
    base = _output_base(tmp_path)
    sandbox = tmp_path / "sandbox/execroot/ws"
    link = sandbox / "external/databazel/databazel/private/distributions.py"
    link.parent.mkdir(parents=True)
    real = base / "execroot/ws/external/databazel/databazel/private/distributions.py"
    os.symlink(real, link)
    monkeypatch.chdir(sandbox)
    monkeypatch.setattr(distributions, "__file__", str(link))
    assert distributions.external_directory() == str(base / "external")
    # Outside any output base: nothing found, and the message says less.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(distributions, "__file__", str(tmp_path / "distributions.py"))
    assert distributions.providers("sklearn", []) == ([], [])
