"""Which distribution, in which repository, provides a top-level module.

For the message of a script that imports a package its target does not
declare (supervise.py): the runner names the `deps` entry to add, in the
spelling of the workspace's package repositories. It looks in the output
base's ``external`` directory, outside the action's inputs (a new package
must change no trial's cache key), for:

* python_env repositories: their ``modules.json`` (python_env.bzl), labels
  ``@<env>//:<distribution>``;
* rules_python ``pip_parse`` repositories (one per distribution, the wheel
  unpacked at the root): the ``*.dist-info`` there, labels
  ``@<prefix><name>//:pkg``; the hub (``@pypi``) whose ``requirements.bzl``
  lists the repository gives the ``requirement("<name>")`` spelling, and its
  list names repositories not fetched yet.

Only error messages use this: when nothing is found (a remote worker, a
layout it does not know), the message is less specific, never wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable

from env_layout import module_names, normalize, record_paths


@dataclasses.dataclass(frozen=True)
class Provider:
    """A `deps` entry that provides a module."""

    label: str  # "@pypi_scikit_learn//:pkg", "@databazel_python//:scikit-learn"
    distribution: str  # PEP 503 name: "scikit-learn"
    hub: str  # the repository whose requirements.bzl has requirement(): "pypi"
    repository: str  # the repository of the label: "pypi_scikit_learn"

    def describe(self) -> str:
        return (
            f'"{self.label}" (distribution {self.distribution}, '
            f'requirement("{self.distribution}") in @{self.hub}//:requirements.bzl)'
        )


def external_directory() -> str | None:
    """The output base's ``external`` directory, from inside a sandbox or not.

    A sandbox links each input to ``<execroot>/<its path>``, the runner's own
    files among them; without a sandbox the working directory is the execroot
    (``<output_base>/execroot/<workspace>``).
    """
    here = os.path.abspath(__file__)
    cwd = os.getcwd()
    execroot = cwd
    with contextlib.suppress(OSError, ValueError):
        target = os.readlink(here)
        relative = os.path.relpath(here, cwd)
        if os.path.isabs(target) and target.endswith(os.sep + relative):
            execroot = target[: -len(relative) - 1]
    external = os.path.join(os.path.dirname(os.path.dirname(execroot)), "external")
    return external if os.path.isdir(external) else None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# rules_python's hub requirements.bzl: `_packages = [("pypi_numpy", "numpy==2.4.6 --hash=..."), ...]`
_HUB_PACKAGE = re.compile(
    r"""\(\s*["'](\w+)["']\s*,\s*["']\s*([A-Za-z0-9][A-Za-z0-9._-]*)"""
)


def _hubs(external: str, repositories: list[str]) -> dict[str, tuple[str, str]]:
    """{pip repository: (hub, distribution)} from the hubs' requirements.bzl."""
    out: dict[str, tuple[str, str]] = {}
    for repo in repositories:
        text = _read(os.path.join(external, repo, "requirements.bzl"))
        if "_packages" not in text or "def requirement(" not in text:
            continue
        for name, requirement in _HUB_PACKAGE.findall(text):
            out.setdefault(name, (repo, normalize(requirement)))
    return out


def _metadata_name(dist_info: str) -> str:
    for line in _read(os.path.join(dist_info, "METADATA")).splitlines():
        if line.startswith("Name:"):
            return normalize(line[5:].strip())
        if not line:
            break
    return normalize(
        os.path.basename(dist_info)[: -len(".dist-info")].rpartition("-")[0]
    )


def index(external: str) -> dict[str, list[Provider]]:
    """{top-level module: the providers of it} of every package repository in `external`."""
    try:
        repositories = sorted(os.listdir(external))
    except OSError:
        return {}
    hubs = _hubs(external, repositories)
    found: dict[str, list[Provider]] = {}

    def add(module: str, provider: Provider) -> None:
        if provider not in found.setdefault(module, []):
            found[module].append(provider)

    for repo in repositories:
        root = os.path.join(external, repo)
        modules = _read(os.path.join(root, "modules.json"))
        if modules:  # python_env
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                data = json.loads(modules)
                name = str(data["repository"])
                for module, dist in sorted(data["modules"].items()):
                    add(module, Provider(f"@{name}//:{dist}", dist, name, repo))
            continue
        try:
            dist_infos = [
                e for e in sorted(os.listdir(root)) if e.endswith(".dist-info")
            ]
        except OSError:
            continue
        for entry in dist_infos:  # a rules_python pip repository
            dist_info = os.path.join(root, entry)
            hub, dist = hubs.get(repo, (repo, _metadata_name(dist_info)))
            for module in module_names(record_paths(dist_info)):
                add(module, Provider(f"@{repo}//:pkg", dist, hub, repo))
    # Repositories a hub lists but no build has fetched yet: by name.
    for repo, (hub, dist) in sorted(hubs.items()):
        if not os.path.isdir(os.path.join(external, repo)):
            add(dist.replace("-", "_"), Provider(f"@{repo}//:pkg", dist, hub, repo))
    return found


def interpreter_environment() -> str | None:
    """The python_env repository of the interpreter running this, if it is one."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    cfg = os.path.realpath(os.path.join(venv, "pyvenv.cfg"))
    if not os.path.exists(cfg):
        return None
    return os.path.basename(os.path.dirname(os.path.dirname(cfg)))


def providers(
    module: str, pythonpath: Iterable[str]
) -> tuple[list[Provider], list[str]]:
    """The entries that provide `module`, best first, and the package hubs known.

    First those of a hub the target already takes packages from (its
    `pythonpath` names their repositories), then those of the interpreter's
    own environment.
    """
    external = external_directory()
    if external is None:
        return [], []
    found = index(external)
    every = {p for ps in found.values() for p in ps}
    by_repository = {p.repository: p.hub for p in every}
    used = set()
    for entry in pythonpath:
        parts = os.path.normpath(entry).split(os.sep)
        if "external" in parts[:-1]:
            repo = parts[parts.index("external") + 1]
            used.add(by_repository.get(repo, repo))
    own = interpreter_environment()
    ranked = sorted(
        found.get(module, []),
        key=lambda p: (p.hub not in used, p.repository != own, p.label),
    )
    return ranked, sorted({p.hub for p in every})
