"""The API reference in docs/ is generated from the Starlark docstrings (tools/gendocs.py)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from bazel_harness import REPO

_spec = importlib.util.spec_from_file_location("gendocs", REPO / "tools" / "gendocs.py")
gendocs = importlib.util.module_from_spec(_spec)
sys.modules["gendocs"] = gendocs  # dataclasses look their module up
_spec.loader.exec_module(gendocs)


def test_docs_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "tools/gendocs.py"), "--out", str(tmp_path)],
        check=True,
    )
    generated = {p.name: p.read_text() for p in tmp_path.iterdir()}
    # docs/ also holds hand-written topic pages and the benchmark results
    # (tools/bench/run.py): only the pages with the generated header count.
    committed = {
        name: (REPO / "docs" / name).read_text()
        for name in gendocs.generated_pages(REPO / "docs")
    }
    assert set(generated) == set(committed)
    for name, text in generated.items():
        assert committed[name] == text, (
            f"docs/{name} is out of date: run tools/gendocs.py"
        )


def test_hand_written_pages_are_neither_compared_nor_removed(tmp_path: Path) -> None:
    gendocs_py = [
        sys.executable,
        str(REPO / "tools/gendocs.py"),
        "--out",
        str(tmp_path),
    ]
    subprocess.run(gendocs_py, check=True)
    (tmp_path / "contract.md").write_text("# The script contract\n")
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n")
    # A page the generator wrote once but no longer writes is stale.
    (tmp_path / "gone.md").write_text(gendocs.HEADER + "\n# `gone.bzl`\n")
    check = subprocess.run([*gendocs_py, "--check"], capture_output=True, text=True)
    assert check.returncode == 1
    assert "out of date: gone.md;" in check.stderr
    subprocess.run(gendocs_py, check=True)
    assert not (tmp_path / "gone.md").exists()
    assert (tmp_path / "contract.md").read_text() == "# The script contract\n"
    assert (tmp_path / "benchmarks.md").read_text() == "# Benchmarks\n"
    subprocess.run([*gendocs_py, "--check"], check=True)
    # An edited generated page is stale.
    (tmp_path / "defs.md").write_text((tmp_path / "defs.md").read_text() + "edit\n")
    assert subprocess.run([*gendocs_py, "--check"], capture_output=True).returncode


def test_every_public_rule_macro_attribute_and_provider_is_documented() -> None:
    pages, problems = gendocs.generate()
    assert problems == []
    defs = pages["defs.md"]
    for symbol in (
        "model",
        "evaluate",
        "hyperparam_search",
        "search_report",
        "ModelInfo",
        "MetricsInfo",
        "SearchReportInfo",
    ):
        assert f"\n## `{symbol}`\n" in defs
    model = defs.split("## `model`")[1].split("## `evaluate`")[0]
    # Attributes shared through COMMON_ATTRS, and one made by a helper function.
    for attribute in ("data", "deps", "env", "train_executable", "training_data"):
        assert f"| `{attribute}` |" in model
    assert "## `databazel_dependencies`" in pages["repositories.md"]
    assert "### `python_env.environment`" in pages["extensions.md"]


def test_missing_docs_are_reported(tmp_path: Path) -> None:
    (tmp_path / "lib" / "private").mkdir(parents=True)
    (tmp_path / "lib" / "defs.bzl").write_text(
        '"""Public API."""\n\n'
        'load("//lib/private:rules.bzl", _Info = "Info", _thing = "thing", _m = "m")\n\n'
        "thing = _thing\nInfo = _Info\nm = _m\n"
    )
    (tmp_path / "lib" / "private" / "rules.bzl").write_text(
        '''"""Private."""

load("@bazel_skylib//lib:dicts.bzl", "dicts")

SHARED = {"shared": attr.string()}

def _helper(doc):
    return attr.label(doc = doc)

Info = provider(doc = "Info.", fields = {"a": "The a.", "b": ""})

thing = rule(
    implementation = None,
    attrs = dicts.add(SHARED, {"own": _helper("Own."), "bare": attr.int()}),
)

def m(name, size = 1):
    """A macro.

    Args:
      name: the name.
    """
'''
    )
    pages, problems = gendocs.generate(tmp_path, {"lib/defs.bzl": "defs.md"})
    assert sorted(problems) == sorted(
        [
            "lib/defs.bzl: rule `thing` has no doc",
            "lib/defs.bzl: attribute `bare` of rule `thing` has no doc",
            "lib/defs.bzl: attribute `shared` of rule `thing` has no doc",
            "lib/defs.bzl: field `b` of provider `Info` has no doc",
            "lib/private/rules.bzl: m: argument `size` of macro `m` has no doc",
        ]
    )
    assert "| `own` | Label | `None` | Own. |" in pages["defs.md"]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


HAND_WRITTEN = [
    REPO / "README.md",
    REPO / "tests" / "README.md",
    *(
        REPO / "docs" / name
        for name in sorted(
            {p.name for p in (REPO / "docs").glob("*.md")}
            - gendocs.generated_pages(REPO / "docs")
        )
    ),
]


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in [*HAND_WRITTEN, REPO / "docs" / "README.md"]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # an external URL
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and (linked.suffix != ".md" or anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such section)")
    assert broken == []


def test_readme_is_short_and_links_every_topic_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    # Its first screen: how to set up, how to test, the main job.
    first_screen = "\n".join(readme.splitlines()[:30])
    for command in ("./setup.sh", "tools/test.sh", "bazel build //mnist:bzl_search"):
        assert command in first_screen, command
    for page in HAND_WRITTEN[2:]:
        if page.name != "benchmarks.md":
            assert f"(docs/{page.name})" in readme, page.name


def test_citations_of_doc_sections_exist() -> None:
    # Comments and messages cite pages as `docs/<page>.md, "<Section>"` or
    # `(docs/<page>.md)`; the README only by its own sections.
    cited = []
    for path in [
        *(REPO / "tests").rglob("*.py"),
        *(REPO / "tools").rglob("*.py"),
        *(REPO / "tools").glob("*.sh"),
        *(REPO / "databazel").rglob("*.bzl"),
        REPO / "MODULE.bazel",
        *(REPO / "examples").glob("*"),
        *(REPO / "mnist").glob("BUILD"),
    ]:
        if not path.is_file():
            continue
        text = re.sub(r"\s*\n\s*#\s*", " ", path.read_text())
        for page, section in re.findall(
            r"((?:docs/[\w-]+|README)\.md|README)(?:,|:)? \"([^\"]+)\"", text
        ):
            cited.append((path, page if page != "README" else "README.md", section))
        for page in re.findall(r"\bdocs/([\w-]+\.md)\b", text):
            assert (REPO / "docs" / page).exists(), (path, page)
    for path, page, section in cited:
        assert _anchor(section) in _anchors(REPO / page), (path, page, section)


def test_the_tests_readme_names_every_test_file() -> None:
    readme = (REPO / "tests" / "README.md").read_text()
    files = sorted((REPO / "tests").glob("**/test_*.py"))
    assert len(files) > 50
    missing = [str(f.relative_to(REPO)) for f in files if f"`{f.name}`" not in readme]
    assert missing == [], "tests/README.md does not name " + ", ".join(missing)
