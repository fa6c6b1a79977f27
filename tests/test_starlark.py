"""Runs the Starlark unit tests (skylib unittest) with `bazel test` in this workspace."""

from __future__ import annotations

import ast
import re

from bazel_harness import REPO, Workspace


def test_starlark_unit_tests_pass(repo: Workspace) -> None:
    # Every test made with unittest.make in tests/starlark runs and passes: a
    # test left out of its suite, or a suite left out of the BUILD file, fails.
    made = sum(
        len(re.findall(r"^\w+ = unittest\.make\(", p.read_text(), re.M))
        for p in (REPO / "tests" / "starlark").glob("*.bzl")
    )
    assert made > 0
    query = repo.bazel("query", "tests(//tests/starlark:all)")
    assert query.returncode == 0, query.stderr[-4000:]
    assert len(query.stdout.split()) == made, query.stdout
    result = repo.bazel("test", "//tests/starlark:all")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = f"{made} test{'s' if made != 1 else ''} pass"
    assert summary in result.stdout + result.stderr


PUBLIC = ["defs", "repositories", "extensions"]


def _loads(label: str) -> set[str]:
    """The .bzl files a .bzl file of this repository loads, transitively, as labels.

    Files of other repositories are not followed: their own bzl_library targets
    hold what they load.
    """
    seen: set[str] = set()
    todo = [label]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.startswith("@"):
            continue
        package, _, name = current[2:].partition(":")
        tree = ast.parse((REPO / package / name).read_text())
        for node in tree.body:
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and ast.unparse(call.func) == "load":
                loaded = call.args[0].value
                if loaded.startswith(":"):
                    loaded = f"//{package}{loaded}"
                todo.append(loaded)
    return seen


def test_bzl_libraries_build_and_hold_every_file_their_bzl_loads(
    repo: Workspace,
) -> None:
    # Users generate docs for their macros that load ours from these targets
    # (as from bazel-skylib's): each must hold its file and all it loads.
    result = repo.bazel("build", "//databazel:all", "//databazel/private:all")
    assert result.returncode == 0, result.stderr[-4000:]
    for name in PUBLIC:
        query = repo.bazel("query", f"kind('source file', deps(//databazel:{name}))")
        assert query.returncode == 0, query.stderr[-4000:]
        files = set(query.stdout.split())
        missing = _loads(f"//databazel:{name}.bzl") - files
        assert not missing, f"//databazel:{name} lacks {sorted(missing)}"
    # Every .bzl file of the rule set is in some library.
    query = repo.bazel(
        "query", "kind('source file', deps(kind(bzl_library, //databazel/...)))"
    )
    bzl_files = {
        f"//{p.parent.relative_to(REPO)}:{p.name}"
        for p in (REPO / "databazel").rglob("*.bzl")
    }
    assert bzl_files <= set(query.stdout.split())
