"""Property-based tests (hypothesis) of trial names, through real Bazel loading.

The names are derived in Starlark (databazel/private/grid.bzl), so every example
is loaded by Bazel itself: a name Bazel rejects, or two targets with one name,
fail the query.
"""

from __future__ import annotations

import math
import re

from bazel_harness import Workspace, starlark_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LOAD = 'load("@databazel//databazel:defs.bzl", "hyperparam_search")\n'
TRIAL_NAME = re.compile(r"[A-Za-z0-9._+-]+")
MAX_TRIAL_NAME_LENGTH = 200  # grid.bzl

# Any text, weighted towards what breaks names and shells.
values = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
        st.sampled_from(list(" \n\t\r'\"`;$()\\/:_-.+*?[]{}#@!~<>|&")),
    ),
    max_size=60,
)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
grids = st.dictionaries(
    keys, st.lists(values, min_size=1, max_size=6, unique=True), min_size=1, max_size=3
)


def search(name: str, grid: dict[str, list[str]]) -> str:
    literal = ", ".join(
        f"{starlark_string(k)}: [{', '.join(map(starlark_string, vs))}]"
        for k, vs in grid.items()
    )
    return f"""
hyperparam_search(
    name = "{name}",
    eval_executable = "//scripts:evaluate.py",
    grid = {{{literal}}},
    metric = "accuracy",
    test_data = "BUILD",
    train_executable = "//scripts:train.py",
    training_data = "BUILD",
)
"""


def trial_names(
    ws: Workspace, grids: dict[str, dict[str, list[str]]]
) -> dict[str, list[str]]:
    """The model targets Bazel creates for each search (by name) of `grids`: one query."""
    ws.write(
        "names/BUILD", LOAD + "".join(search(name, g) for name, g in grids.items())
    )
    result = ws.bazel("query", "kind(model, //names:all)", "--output=label")
    assert result.returncode == 0, result.stderr[-3000:]
    names: dict[str, list[str]] = {name: [] for name in grids}
    for label in result.stdout.split():
        target = label.split(":", 1)[1]
        names[target.split("__", 1)[0]].append(target)
    return names


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=grids)
def test_trial_names_are_valid_distinct_bounded_and_stable(
    ws: Workspace, grid: dict[str, list[str]]
) -> None:
    # The same grid with one more value (longer than any other, so new).
    first = next(iter(grid))
    grown = {**grid, first: [*grid[first], max(grid[first], key=len) + "_"]}
    found = trial_names(ws, {"p": grid, "q": grown})
    names = found["p"]
    assert len(names) == math.prod(len(v) for v in grid.values())
    assert len(set(names)) == len(names)
    for name in names:
        assert TRIAL_NAME.fullmatch(name), name
        assert name.startswith("p__")
        assert len(name) <= MAX_TRIAL_NAME_LENGTH

    # Adding a value renames no other trial (so growing a grid re-uses results),
    # whatever the grid.
    larger = {name.removeprefix("q__") for name in found["q"]}
    assert len(larger) == math.prod(len(v) for v in grown.values())
    assert {name.removeprefix("p__") for name in names} < larger
