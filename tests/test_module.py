"""MODULE.bazel agrees with WORKSPACE, and the rule set avoids what newer Bazel rejects.

Bazel 4.2.3, the only Bazel these tests run, has no bzlmod: it never reads
MODULE.bazel or extensions.bzl. These tests check them statically instead.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
from bazel_harness import REPO


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gendocs = _load_tool("gendocs")
release = _load_tool("release")


def _value(node: ast.expr):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)  # a name, such as the extension in use_repo()


def calls(path: Path) -> list[tuple[str, list, dict]]:
    """Top-level calls of a Starlark file: (function, positional args, keyword args)."""
    result = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Expr, ast.Assign)) and isinstance(
            node.value, ast.Call
        ):
            call = node.value
            args = [_value(a) for a in call.args]
            kwargs = {k.arg: _value(k.value) for k in call.keywords}
            result.append((ast.unparse(call.func), args, kwargs))
    return result


def only(items: list, what: str):
    assert len(items) == 1, f"expected one {what}, found {items}"
    return items[0]


MODULE = calls(REPO / "MODULE.bazel")
WORKSPACE = calls(REPO / "WORKSPACE")


def test_module_name_and_version() -> None:
    module = only([k for f, _, k in MODULE if f == "module"], "module()")
    workspace = only([k for f, _, k in WORKSPACE if f == "workspace"], "workspace()")
    assert module["name"] == workspace["name"] == "databazel"
    assert re.fullmatch(r"\d+\.\d+\.\d+", module["version"])
    # tools/release.py names the archive after the same version.
    assert (
        release.module_version((REPO / "MODULE.bazel").read_text()) == module["version"]
    )
    # Every install snippet in the docs names this version.
    for path in [REPO / "README.md", REPO / "databazel/extensions.bzl"]:
        versions = re.findall(
            r'bazel_dep\(name = "databazel", version = "([^"]+)"\)', path.read_text()
        )
        assert versions and set(versions) == {module["version"]}, path


def test_bazel_deps_match_workspace_and_databazel_dependencies() -> None:
    archives = {k["name"]: k for f, _, k in WORKSPACE if f == "http_archive"}
    deps = [k for f, _, k in MODULE if f == "bazel_dep"]
    for dep in deps:
        # WORKSPACE declares the same version of every module databazel uses.
        urls = archives[dep["name"]]["urls"]
        assert all(f"/{dep['version']}/" in url for url in urls), (dep, urls)
    # Users get the non-dev dependencies: in a WORKSPACE from databazel_dependencies().
    repositories = ast.parse((REPO / "databazel/repositories.bzl").read_text())
    macro = only(
        [
            n
            for n in repositories.body
            if isinstance(n, ast.FunctionDef) and n.name == "databazel_dependencies"
        ],
        "databazel_dependencies",
    )
    declared = {
        kw.value.value
        for node in ast.walk(macro)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "maybe"
        if ast.unparse(node.args[0]) != "_python_env"
        for kw in node.keywords
        if kw.arg == "name"
    }
    assert declared == {d["name"] for d in deps if not d.get("dev_dependency")}
    assert set(archives) == {d["name"] for d in deps}
    # ... with the same pinned archive as the WORKSPACE.
    for node in ast.walk(macro):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "maybe":
            if ast.unparse(node.args[0]) == "_python_env":
                continue
            assert ast.unparse(node.args[0]) == "http_archive"
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
            workspace = archives[kwargs["name"]]
            assert (kwargs["sha256"], kwargs["urls"]) == (
                workspace["sha256"],
                workspace["urls"],
            )


def test_every_repository_the_rules_load_is_a_dependency_of_the_module() -> None:
    # A repository that databazel's own .bzl files load from must reach users:
    # a non-dev bazel_dep (and so, per the test above, in databazel_dependencies()).
    loaded = {
        repo
        for path in (REPO / "databazel").rglob("*.bzl")
        for repo in re.findall(r'^load\("@(\w+)//', path.read_text(), re.M)
    }
    assert "bazel_skylib" in loaded  # lib/paths.bzl, lib/shell.bzl
    deps = {k["name"] for f, _, k in MODULE if f == "bazel_dep"}
    non_dev = {
        k["name"]
        for f, _, k in MODULE
        if f == "bazel_dep" and not k.get("dev_dependency")
    }
    # (Docstrings show loads of @databazel itself.)
    assert loaded - {"bazel_tools", "databazel"} <= non_dev, (loaded, deps)


def test_python_environment_and_toolchains_match_workspace() -> None:
    extension = only(
        [(a, k) for f, a, k in MODULE if f == "use_extension"], "use_extension"
    )
    assert extension[0] == ["//databazel:extensions.bzl", "python_env"]
    tags = [k for f, _, k in MODULE if f == "python_env.environment"]
    envs = [k for f, _, k in WORKSPACE if f == "python_env"]
    assert tags == envs and tags
    use_repo = only([a for f, a, _ in MODULE if f == "use_repo"], "use_repo")
    assert use_repo == ["python_env"] + [t["name"] for t in tags]
    module_toolchains = [a for f, a, _ in MODULE if f == "register_toolchains"]
    workspace_toolchains = [a for f, a, _ in WORKSPACE if f == "register_toolchains"]
    assert (
        module_toolchains == workspace_toolchains == [["@databazel_python//:toolchain"]]
    )


def test_extension_takes_and_passes_every_python_env_attribute() -> None:
    loader = gendocs.Loader(REPO)
    rule = loader.module("databazel/repositories.bzl").lookup("python_env")
    extension = loader.module("databazel/extensions.bzl").lookup("python_env")
    rule_attrs = set(rule.kwargs["attrs"])
    tag_attrs = set(extension.kwargs["tag_classes"]["environment"].kwargs["attrs"])
    assert tag_attrs == rule_attrs | {"name"}
    tree = ast.parse((REPO / "databazel/extensions.bzl").read_text())
    call = only(
        [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and ast.unparse(n.func) == "_python_env_rule"
        ],
        "python_env call",
    )
    assert {k.arg for k in call.keywords} == tag_attrs


def _starlark_files() -> list[Path]:
    files = [*REPO.glob("databazel/**/*.bzl"), *REPO.glob("databazel/**/BUILD")]
    assert REPO / "databazel/defs.bzl" in files
    return files


def _calls_named(text: str, name: str) -> list[str]:
    """The argument text of every call `name(...)` (parentheses balanced)."""
    found = []
    # A call quoted in a docstring (`glob(...)`) is not a call.
    for match in re.finditer(rf"(?<![\w.`]){re.escape(name)}\(", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        found.append(text[match.end() : i - 1])
    return found


def test_rule_set_avoids_what_newer_bazel_rejects() -> None:
    problems = []
    for path in _starlark_files():
        text = path.read_text()
        where = path.relative_to(REPO)
        if re.search(r'cfg\s*=\s*"host"', text):
            problems.append(f'{where}: cfg = "host" (use "exec")')
        if re.search(r"\.to_(json|proto)\(", text):
            problems.append(f"{where}: struct.to_json/to_proto (use json.encode)")
        for args in _calls_named(text, "glob"):
            if "allow_empty" not in args:
                problems.append(f"{where}: glob without allow_empty")
        for rule in ("py_library", "py_binary", "py_test"):
            # Allowed only where marked as deliberate: python_env generates
            # one py_library per distribution (rules_python's pip layout).
            for match in re.finditer(rf"(?<![\w.]){rule}\(", text):
                before = text[: match.start()].rstrip().splitlines()
                if not before or "buildifier: disable=native-py" not in before[-1]:
                    problems.append(f"{where}: native {rule}")
    assert problems == []


def test_the_checks_catch_what_they_look_for() -> None:
    sample = 'glob(["a"], exclude = f(["b"]))\nglob(["c"], allow_empty = True)\n'
    assert _calls_named(sample, "glob") == [
        '["a"], exclude = f(["b"])',
        '["c"], allow_empty = True',
    ]
    assert _calls_named("native.py_library(name = 'x')", "py_library") == []


class _Fail(Exception):
    pass


def _run_extension(modules: list) -> list[dict]:
    """Runs extensions.bzl's implementation as Python (Starlark is a subset here)
    with stand-ins for Bazel's builtins; returns the python_env calls it makes."""
    tree = ast.parse((REPO / "databazel/extensions.bzl").read_text())
    tree.body = [
        n
        for n in tree.body
        if not (isinstance(n, ast.Expr) and ast.unparse(n).startswith("load("))
    ]
    created: list[dict] = []

    def fail(message: str) -> None:
        raise _Fail(message)

    namespace = {
        "PYTHON_ENV_ATTRS": {},
        "_python_env_rule": lambda **kwargs: created.append(kwargs),
        "tag_class": lambda **kwargs: kwargs,
        "module_extension": lambda **kwargs: kwargs,
        "attr": types.SimpleNamespace(string=lambda **kwargs: kwargs),
        "fail": fail,
    }
    exec(compile(tree, "extensions.bzl", "exec"), namespace)
    namespace["_python_env_impl"](types.SimpleNamespace(modules=modules))
    return created


def _module(name: str, *envs: dict) -> types.SimpleNamespace:
    settings = {
        "python_interpreter": "python3",
        "prune_tests": True,
        "prune_build_files": True,
        "timeout": 1200,
    }
    tags = [types.SimpleNamespace(**(settings | env)) for env in envs]
    return types.SimpleNamespace(
        name=name, tags=types.SimpleNamespace(environment=tags)
    )


def test_extension_creates_one_environment_per_tag() -> None:
    created = _run_extension(
        [
            _module("root", {"name": "a", "requirements_lock": "//:lock.txt"}),
            _module("dep", {"name": "b", "requirements_lock": None, "timeout": 5}),
        ]
    )
    assert created == [
        {
            "name": "a",
            "repo_name": "a",
            "python_interpreter": "python3",
            "requirements_lock": "//:lock.txt",
            "prune_tests": True,
            "prune_build_files": True,
            "timeout": 1200,
        },
        {
            "name": "b",
            "repo_name": "b",
            "python_interpreter": "python3",
            "requirements_lock": None,
            "prune_tests": True,
            "prune_build_files": True,
            "timeout": 5,
        },
    ]
    with pytest.raises(_Fail, match="two modules declare the environment `a`"):
        _run_extension(
            [
                _module("root", {"name": "a", "requirements_lock": None}),
                _module("dep", {"name": "a", "requirements_lock": None}),
            ]
        )
