"""Unit tests of the random-search sampler (databazel/private/random.bzl)."""

load("@bazel_skylib//lib:unittest.bzl", "asserts", "unittest")

# buildifier: disable=bzl-visibility
load("//databazel/private:random.bzl", "draw", "encode_space", "expand_random", "format_decimal", "ln_fixed", "loguniform", "mix64", "parse_decimal", "randint", "sample", "uniform")

_SPACE = {
    "C": loguniform(0.001, 100),
    "max_iter": randint(50, 300),
    "solver": ["lbfgs", "saga"],
    "tol": uniform("0", "1e-3"),
}

def _golden_test_impl(ctx):
    env = unittest.begin(ctx)

    # Pinned values: a change here changes every user's trials. They were
    # checked against a Python port of SplitMix64 and float math.
    asserts.equals(env, 16294208416658607535, mix64(0))
    asserts.equals(env, [3642989035757833, 1090985640563211, 2736384372322321], [draw(42, i, "C") for i in range(3)])
    asserts.equals(env, [
        "s__C-36.22__max_iter-166__solver-lbfgs",
        "s__C-0.005709__max_iter-111__solver-saga",
        "s__C-0.4228__max_iter-83__solver-lbfgs",
    ], [t.name for t in expand_random("//t:s", "s", {"C": _SPACE["C"], "max_iter": _SPACE["max_iter"], "solver": _SPACE["solver"]}, 3, 7)])
    return unittest.end(env)

golden_test = unittest.make(_golden_test_impl)

def _prefix_test_impl(ctx):
    env = unittest.begin(ctx)

    # Growing num_trials keeps the earlier trials: only the new ones run.
    small = expand_random("//t:s", "s", _SPACE, 5, 1)
    large = expand_random("//t:s", "s", _SPACE, 20, 1)
    asserts.equals(env, small, large[:5])
    asserts.equals(env, 20, len({t.name: True for t in large}))

    # Another seed, other trials; fixed hyperparameters reach every trial.
    other = expand_random("//t:s", "s", _SPACE, 5, 2, {"penalty": "l2"})
    asserts.false(env, [t.name for t in small] == [t.name for t in other])
    for t in other:
        asserts.equals(env, "l2", t.hyperparams["penalty"])
        asserts.false(env, "penalty" in t.name)
    return unittest.end(env)

prefix_test = unittest.make(_prefix_test_impl)

def _ranges_test_impl(ctx):
    env = unittest.begin(ctx)
    for trial in expand_random("//t:s", "s", _SPACE, 200, 9):
        hp = trial.hyperparams
        asserts.true(env, float(hp["C"]) >= 0.001 and float(hp["C"]) <= 100, hp["C"])
        asserts.true(env, int(hp["max_iter"]) >= 50 and int(hp["max_iter"]) <= 300, hp["max_iter"])
        asserts.true(env, hp["solver"] in ["lbfgs", "saga"])
        asserts.true(env, float(hp["tol"]) >= 0 and float(hp["tol"]) <= 0.001, hp["tol"])

    # The extremes of a draw reach (but don't pass) the bounds.
    asserts.equals(env, "0.001", sample(loguniform(0.001, 100), 0))
    asserts.equals(env, "100", sample(loguniform(0.001, 100), (1 << 53) - 1))
    asserts.equals(env, "-5", sample(uniform(-5, 5), 0))
    asserts.equals(env, "5", sample(uniform(-5, 5), (1 << 53) - 1))
    asserts.equals(env, "0.5", sample(uniform(0, 1), 1 << 52))
    asserts.equals(env, "3", sample(randint(3, 3), 12345))
    asserts.equals(env, "b", sample(["a", "b", "c"], 4))

    # A small discrete space is drawn without repeats.
    names = [t.name for t in expand_random("//t:s", "s", {"a": ["x", "y"], "b": randint(1, 3)}, 6, 0)]
    asserts.equals(env, 6, len({n: True for n in names}))
    return unittest.end(env)

ranges_test = unittest.make(_ranges_test_impl)

def _decimal_test_impl(ctx):
    env = unittest.begin(ctx)
    for text, expected in [
        ("0.1", (1, -1)),
        ("1e-3", (1, -3)),
        ("-2.5", (-25, -1)),
        ("+1E+3", (1, 3)),
        (".5", (5, -1)),
        (0.1, (1, -1)),  # a float is read through its shortest representation
        (1e-7, (1, -7)),
        (100, (100, 0)),
    ]:
        asserts.equals(env, expected, parse_decimal(text), repr(text))
    for bad in ["", "abc", "1e", "inf", "nan", "1.2.3", True, None, [1]]:
        asserts.equals(env, None, parse_decimal(bad), repr(bad))
    for d, expected in [
        ((1234, -7), "0.0001234"),
        ((5237, -1), "523.7"),
        ((200, 0), "200"),
        ((2000, -1), "200"),
        ((-12, -4), "-0.0012"),
        ((1, -5), "0.00001"),
        ((1, -6), "1e-06"),
        ((1234, -10), "1.234e-07"),
        ((5, 20), "5e+20"),
        ((0, 3), "0"),
    ]:
        asserts.equals(env, expected, format_decimal(d))

    # ln 2 and ln 10 to 27 digits.
    asserts.equals(env, 693147180559945309417232, ln_fixed((2, 0)) // 1000000)
    asserts.equals(env, 2302585092994045684017991, ln_fixed((10, 0)) // 1000000)
    return unittest.end(env)

decimal_test = unittest.make(_decimal_test_impl)

def _encode_space_test_impl(ctx):
    env = unittest.begin(ctx)

    # What a tpe search's suggestion step gets: the space in order, bounds as exact decimals.
    asserts.equals(env, {
        "entries": [
            {"high": "100", "kind": "loguniform", "low": "0.001", "name": "C"},
            {"high": 300, "kind": "randint", "low": 50, "name": "max_iter"},
            {"kind": "choice", "name": "solver", "values": ["lbfgs", "saga"]},
            {"high": "0.001", "kind": "uniform", "low": "0", "name": "tol"},
        ],
        "significant_digits": 4,
    }, json.decode(encode_space(_SPACE)))
    return unittest.end(env)

encode_space_test = unittest.make(_encode_space_test_impl)

def random_test_suite(name):
    unittest.suite(
        name,
        golden_test,
        prefix_test,
        ranges_test,
        decimal_test,
        encode_space_test,
    )
