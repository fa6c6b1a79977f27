"""Tests for databazel/private/suggest.py: the suggestion step of `strategy = "tpe"`.

The space mapping onto Optuna's distributions, values rendered as random
search renders them, failed trials given to Optuna as failed, byte-identical
output for the same inputs, and the synthetic-objective comparison of the
issue: over ten fixed seeds, TPE's median best is closer to a known optimum
than random search's with the same number of trials.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import optuna
import pytest
import suggest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

# `python3 tool.py suggest ARGS`, as the actions start it.
SUGGEST = (str(Path(suggest.__file__).resolve().parent / "tool.py"), "suggest")


def make_space(*entries: dict) -> suggest.Space:
    return suggest.parse_space(
        json.dumps({"significant_digits": 4, "entries": list(entries)})
    )


SPACE = make_space(
    {"name": "x", "kind": "uniform", "low": "-5", "high": "5"},
    {"name": "lr", "kind": "loguniform", "low": "0.00001", "high": "1"},
    {"name": "n", "kind": "randint", "low": 1, "high": 100},
    {"name": "kind", "kind": "choice", "values": ["a", "b", "c"]},
)


def entry(space: suggest.Space, name: str) -> suggest.Entry:
    return next(e for e in space.entries if e.name == name)


# ---------------------------------------------------------------------------
# The search space in Optuna's terms


def test_entries_map_onto_optuna_distributions() -> None:
    dists = {e.name: suggest.distribution(e, 4) for e in SPACE.entries}
    assert dists["kind"] == CategoricalDistribution(("a", "b", "c"))
    # randint: both ends included, as in Optuna's IntDistribution.
    assert dists["n"] == IntDistribution(1, 100)
    assert dists["lr"] == FloatDistribution(1e-5, 1.0, log=True)
    # uniform(-5, 5): random search draws multiples of 0.01 (4 digits of the
    # range), and so does the stepped distribution: exactly the same points.
    assert dists["x"] == FloatDistribution(-5.0, 5.0, step=0.01)


def test_uniform_step_is_random_searchs_rounding_unit() -> None:
    cases = [
        (("0", "1"), "0.001", True),
        (("0", "0.001"), "0.000001", True),
        (("0.5", "2"), "0.001", True),
        (("-5", "5"), "0.01", True),
        (("100", "300"), "0.1", True),
        # A bound finer than the unit: the distribution is continuous, and
        # values are rounded (and clamped) as random search rounds them.
        (("0.00001", "1"), "0.0001", False),
    ]
    for (low, high), unit, stepped in cases:
        e = make_space({"name": "v", "kind": "uniform", "low": low, "high": high})
        assert suggest.uniform_unit(e.entries[0], 4) == Decimal(unit)
        dist = suggest.distribution(e.entries[0], 4)
        assert (dist.step is not None) == stepped, (low, high)
        if stepped:
            assert dist.step == float(unit)


def test_format_decimal_matches_random_bzl() -> None:
    # The cases of tests/starlark/random_test.bzl's decimal_test.
    for value, expected in [
        ("0.0001234", "0.0001234"),
        ("523.7", "523.7"),
        ("200", "200"),
        ("200.0", "200"),
        ("-0.0012", "-0.0012"),
        ("0.00001", "0.00001"),
        ("0.000001", "1e-06"),
        ("1.234e-07", "1.234e-07"),
        ("5e20", "5e+20"),
        ("0E3", "0"),
    ]:
        assert suggest.format_decimal(Decimal(value)) == expected


def test_values_are_rendered_as_random_search_renders_them() -> None:
    x, lr, n, kind = (entry(SPACE, k) for k in ("x", "lr", "n", "kind"))
    assert suggest.render(x, 0.30000000000000004, 4) == "0.3"
    assert suggest.render(x, -4.999999999, 4) == "-5"
    assert suggest.render(x, 1.235, 4) == "1.24"  # half up, like random.bzl
    assert suggest.render(lr, 0.00012344999, 4) == "0.0001234"
    assert suggest.render(lr, 3.62249e-3, 4) == "0.003622"
    assert suggest.render(lr, 1.23456e-5, 4) == "0.00001235"  # plain down to 1e-5
    tiny = make_space({"name": "v", "kind": "loguniform", "low": "1e-9", "high": "1"})
    assert suggest.render(tiny.entries[0], 1.23456e-7, 4) == "1.235e-07"
    assert suggest.render(lr, 0.99996, 4) == "1"  # 9.9996 rounds to 10.00, clamped
    assert suggest.render(n, 37, 4) == "37"
    assert suggest.render(kind, "b", 4) == "b"
    # Never outside the bounds: a continuous uniform rounds, then clamps.
    fine = make_space({"name": "v", "kind": "uniform", "low": "0.00001", "high": "1"})
    assert suggest.render(fine.entries[0], 0.0000104, 4) == "0.00001"


def test_random_searchs_values_are_in_the_distributions() -> None:
    # Pinned draws of tests/starlark/random_test.bzl (seed 7): they go back
    # into Optuna as earlier trials, unchanged.
    space = make_space(
        {"name": "C", "kind": "loguniform", "low": "0.001", "high": "100"},
        {"name": "max_iter", "kind": "randint", "low": 50, "high": 300},
        {"name": "solver", "kind": "choice", "values": ["lbfgs", "saga"]},
        {"name": "tol", "kind": "uniform", "low": "0", "high": "0.001"},
    )
    drawn = [
        {"C": "36.22", "max_iter": "166", "solver": "lbfgs", "tol": "0.000123"},
        {"C": "0.005709", "max_iter": "111", "solver": "saga", "tol": "0.001"},
        {"C": "0.4228", "max_iter": "83", "solver": "lbfgs", "tol": "0"},
    ]
    observations = [suggest.Observation(h, float(i)) for i, h in enumerate(drawn)]
    suggestions = suggest.suggest(space, observations, "max", 7, 1, 3)
    assert len(suggestions) == 3
    for values in suggestions:
        assert set(values) == {"C", "max_iter", "solver", "tol"}
        assert 0.001 <= float(values["C"]) <= 100
        assert len(values["C"].replace(".", "").lstrip("0")) <= 4
        assert 50 <= int(values["max_iter"]) <= 300
        assert values["solver"] in ("lbfgs", "saga")
        tol = Decimal(values["tol"])
        assert 0 <= tol <= Decimal("0.001") and tol % Decimal("0.000001") == 0


def test_a_value_outside_the_space_is_an_error() -> None:
    bad = suggest.Observation({"x": "7", "lr": "0.1", "n": "3", "kind": "a"}, 1.0)
    with pytest.raises(suggest.RunnerError, match=r"x = \"7\", which is not"):
        suggest.suggest(SPACE, [bad], "max", 0, 1, 1)
    bad = suggest.Observation({"x": "1", "lr": "0.1", "n": "3", "kind": "z"}, 1.0)
    with pytest.raises(suggest.RunnerError, match=r"kind = \"z\""):
        suggest.suggest(SPACE, [bad], "max", 0, 1, 1)


# ---------------------------------------------------------------------------
# Failed trials


def test_a_failed_trial_reaches_optuna_as_failed(monkeypatch) -> None:
    added: list = []
    original = optuna.Study.add_trial

    def spy(self, trial):  # type: ignore[no-untyped-def]
        added.append(trial)
        return original(self, trial)

    monkeypatch.setattr(optuna.Study, "add_trial", spy)
    ok = suggest.Observation({"x": "1", "lr": "0.1", "n": "3", "kind": "a"}, 0.5)
    failed = suggest.Observation({"x": "2", "lr": "0.2", "n": "4", "kind": "b"}, None)
    suggestions = suggest.suggest(SPACE, [ok, failed], "max", 0, 1, 2)
    assert len(suggestions) == 2
    states = [t.state for t in added]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert added[1].value is None and added[1].params["kind"] == "b"
    # Every trial failed: the round still gets its suggestions.
    assert len(suggest.suggest(SPACE, [failed, failed], "min", 0, 1, 3)) == 3


# ---------------------------------------------------------------------------
# The command line: files in, files out


def write_trial(root: Path, i: int, hyperparams: dict, metrics: dict) -> list[str]:
    hp, mt = root / f"t{i}.hyperparams.json", root / f"t{i}.metrics.json"
    hp.write_text(json.dumps(hyperparams))
    mt.write_text(json.dumps(metrics))
    return ["--trial", str(hp), str(mt)]


def run_cli(
    root: Path, extra: list[str], outputs: int = 2
) -> subprocess.CompletedProcess:
    space = {"significant_digits": 4, "entries": [
        {"name": "x", "kind": "uniform", "low": "-5", "high": "5"},
        {"name": "kind", "kind": "choice", "values": ["a", "b"]},
    ]}  # fmt: skip
    args = [sys.executable, *SUGGEST, "--target", "//t:s__round-1__suggest"]
    args += ["--space", json.dumps(space), "--fixed", '{"fixed":"yes"}']
    args += ["--metric", "accuracy", "--mode", "max", "--seed", "3", "--round", "1"]
    for i in range(outputs):
        args += [
            "--output",
            str(root / "out" / f"s__round-1__trial-{i}.hyperparams.json"),
        ]
    return subprocess.run(args + extra, capture_output=True, text=True, timeout=120)


def test_cli_writes_one_file_per_slot_deterministically(tmp_path: Path) -> None:
    trials = write_trial(
        tmp_path, 0, {"x": "1.5", "kind": "a", "fixed": "yes"}, {"accuracy": 0.8}
    )
    trials += write_trial(
        tmp_path, 1, {"x": "-3", "kind": "b", "fixed": "yes"}, {"accuracy": 0.2}
    )
    failure = {"status": "failed", "stage": "train", "target": "//t:s_2", "exit_code": 3,
               "signal": None, "error": "boom", "stderr_tail": ""}  # fmt: skip
    trials += write_trial(tmp_path, 2, {"x": "4", "kind": "a", "fixed": "yes"}, failure)
    first = run_cli(tmp_path, trials)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    out = sorted((tmp_path / "out").iterdir())
    texts = [p.read_bytes() for p in out]
    for text in texts:
        values = json.loads(text)
        assert list(values) == sorted(values)  # the compact, sorted form
        assert values["fixed"] == "yes" and values["kind"] in ("a", "b")
        assert (
            text == json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        )
    # Same inputs, same bytes.
    again = run_cli(tmp_path, trials)
    assert again.returncode == 0
    assert [p.read_bytes() for p in sorted((tmp_path / "out").iterdir())] == texts


def test_cli_errors_name_the_target_and_leave_no_output(tmp_path: Path) -> None:
    trials = write_trial(tmp_path, 0, {"x": "1.5", "kind": "a"}, {"loss": 0.8})
    result = run_cli(tmp_path, trials)
    assert result.returncode == 1
    assert result.stderr.startswith("databazel: error: //t:s__round-1__suggest: ")
    assert 'has no metric "accuracy"; its metrics are: loss' in result.stderr
    assert (
        not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
    )


# ---------------------------------------------------------------------------
# The synthetic objective

# A smooth score with its maximum, 0, at x = 1.3, lr = 10^-2.5, n = 37, kind = b.
OPTIMUM = 0.0


def score(h: dict[str, str]) -> float:
    return -(
        (float(h["x"]) - 1.3) ** 2 / 25
        + (math.log10(float(h["lr"])) + 2.5) ** 2 / 6.25
        + ((int(h["n"]) - 37) / 50) ** 2
        + (0.0 if h["kind"] == "b" else 0.3)
    )


def random_draws(seed: int, count: int) -> list[dict[str, str]]:
    """`count` independent uniform draws, rendered as random search renders them.

    A fair stand-in for random.bzl's draws (which happen in Starlark, at load
    time): Optuna's RandomSampler over the same distributions, seeded.
    """
    dists = {e.name: suggest.distribution(e, 4) for e in SPACE.entries}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(count):
        trial = study.ask(dists)
        out.append(
            {e.name: suggest.render(e, trial.params[e.name], 4) for e in SPACE.entries}
        )
    return out


def test_tpe_beats_random_search_on_a_synthetic_objective() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rounds, per_round = 8, 5
    tpe_gaps, random_gaps = [], []
    for seed in range(10):  # all ten seeds, none left out
        drawn = random_draws(seed, rounds * per_round)
        # Random search: all 40 draws. TPE: the same first 5 as its round 0
        # (as a tpe search shares random search's first draws), then 7 rounds
        # suggested from the earlier ones.
        random_gaps.append(OPTIMUM - max(score(h) for h in drawn))
        trials = drawn[:per_round]
        for round_ in range(1, rounds):
            observations = [suggest.Observation(h, score(h)) for h in trials]
            trials += suggest.suggest(
                SPACE, observations, "max", seed, round_, per_round
            )
        assert len(trials) == rounds * per_round
        tpe_gaps.append(OPTIMUM - max(score(h) for h in trials))
    print(f"median gap to the optimum: tpe {statistics.median(tpe_gaps):.4f}, "
          f"random {statistics.median(random_gaps):.4f}")  # fmt: skip
    assert statistics.median(tpe_gaps) < statistics.median(random_gaps)
