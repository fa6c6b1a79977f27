"""Unit tests of grid expansion and trial naming (databazel/private/grid.bzl)."""

load("@bazel_skylib//lib:unittest.bzl", "asserts", "unittest")

# buildifier: disable=bzl-visibility
load("//databazel/private:grid.bzl", "MAX_TRIAL_NAME_LENGTH", "MAX_VALUE_CHARS_IN_NAME", "expand_grid", "grid_size", "is_identifier", "trial_name", "value_to_name")

_VALID_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-"

def _expand_test_impl(ctx):
    env = unittest.begin(ctx)
    trials = expand_grid("//t:s", "s", {"C": ["0.1", "1"], "solver": ["lbfgs", "saga", "sag"]})
    asserts.equals(env, 6, len(trials))
    asserts.equals(env, [
        "s__C-0.1__solver-lbfgs",
        "s__C-0.1__solver-saga",
        "s__C-0.1__solver-sag",
        "s__C-1__solver-lbfgs",
        "s__C-1__solver-saga",
        "s__C-1__solver-sag",
    ], [t.name for t in trials])
    asserts.equals(env, {"C": "1", "solver": "saga"}, trials[4].hyperparams)

    # Fixed hyperparameters reach every trial but not the names.
    fixed = expand_grid("//t:s", "s", {"C": ["1"]}, {"tol": "1e-4"})
    asserts.equals(env, "s__C-1", fixed[0].name)
    asserts.equals(env, {"tol": "1e-4", "C": "1"}, fixed[0].hyperparams)

    # One axis with one value still makes a trial.
    asserts.equals(env, 1, len(expand_grid("//t:s", "s", {"a": ["x"]})))
    return unittest.end(env)

expand_test = unittest.make(_expand_test_impl)

def _stable_names_test_impl(ctx):
    env = unittest.begin(ctx)

    # Adding a value adds trials and renames none: the old ones stay cached.
    before = [t.name for t in expand_grid("//t:s", "s", {"C": ["0.1", "1"], "k": ["a"]})]
    after = [t.name for t in expand_grid("//t:s", "s", {"C": ["0.1", "1", "10"], "k": ["a"]})]
    for name in before:
        asserts.true(env, name in after, "{} disappeared after adding a grid value".format(name))
    asserts.equals(env, 3, len(after))
    return unittest.end(env)

stable_names_test = unittest.make(_stable_names_test_impl)

def _value_to_name_test_impl(ctx):
    env = unittest.begin(ctx)

    # Readable values are kept verbatim.
    for v in ["0.1", "1e-4", "lbfgs", "-3", "a+b", "relu_2"]:
        asserts.equals(env, v, value_to_name(v))

    # Other values keep what they can, always valid, and never collide.
    tricky = [
        "a b",
        "a/b",
        "a:b",
        "a_b",
        "a__b",
        "a_",
        "",
        ".",
        "..",
        "$(touch x)",
        "a\nb",
        "é",
        "x" * 40,
        "x" * 41,
        "'\"`;",
        "a_h0123456789abcdef",
        value_to_name("a b"),
    ]
    names = {}
    for v in tricky:
        n = value_to_name(v)
        asserts.true(env, len(n) > 0, "empty name piece for {}".format(repr(v)))
        asserts.true(env, len(n) <= MAX_VALUE_CHARS_IN_NAME + 18, "name piece too long for {}".format(repr(v)))
        for c in n.elems():
            asserts.true(env, c in _VALID_NAME_CHARS.elems(), "{} maps to {} with invalid character {}".format(repr(v), repr(n), repr(c)))
        asserts.false(env, "__" in n, "{} maps to {}, which holds the separator __".format(repr(v), n))
        asserts.false(env, n.endswith("_"), "{} maps to {}, which ends in _".format(repr(v), n))
        asserts.false(env, n in names, "{} and {} both map to {}".format(repr(v), repr(names.get(n)), n))
        names[n] = v

    # Shortened values keep their readable part.
    asserts.true(env, value_to_name("a  b/c").startswith("a_b_c_h"), value_to_name("a  b/c"))
    asserts.equals(env, "x" * 40, value_to_name("x" * 40))
    asserts.true(env, value_to_name("x" * 41).startswith("x" * 40 + "_h"))

    # Deterministic.
    asserts.equals(env, value_to_name("a b"), value_to_name("a b"))
    asserts.equals(env, "s__C-1__solver-lbfgs", trial_name("s", [("C", "1"), ("solver", "lbfgs")]))
    return unittest.end(env)

value_to_name_test = unittest.make(_value_to_name_test_impl)

def _unambiguous_names_test_impl(ctx):
    env = unittest.begin(ctx)

    # Values holding the separator cannot make two combinations look alike.
    a = trial_name("s", [("a", "1__b-2"), ("b", "3")])
    b = trial_name("s", [("a", "1"), ("b", "2__b-3")])
    asserts.true(env, a != b, "{} == {}".format(a, b))
    trials = expand_grid("//t:s", "s", {"a": ["1", "1__b-2"], "b": ["3", "2__b-3"]})
    asserts.equals(env, 4, len({t.name: True for t in trials}))

    # Long names are cut, end in a hash, and stay distinct.
    long_grid = {"k{}".format(i): ["v" * 40, "w" * 40] for i in range(8)}
    names = [t.name for t in expand_grid("//t:s", "s", long_grid)]
    asserts.equals(env, 256, len({n: True for n in names}))
    for n in names:
        asserts.true(env, len(n) <= MAX_TRIAL_NAME_LENGTH, "{} is {} long".format(n, len(n)))
        asserts.true(env, n.startswith("s__k0-"), n)
    return unittest.end(env)

unambiguous_names_test = unittest.make(_unambiguous_names_test_impl)

def _grid_size_test_impl(ctx):
    env = unittest.begin(ctx)
    asserts.equals(env, 12, grid_size({"a": ["1", "2", "3"], "b": ["x", "y", "z", "w"]}))
    asserts.equals(env, 1, grid_size({"a": ["1"]}))

    # The limit is inclusive and can be raised.
    asserts.equals(env, 12, len(expand_grid("//t:s", "s", {"a": ["1", "2", "3"], "b": ["x", "y", "z", "w"]}, max_trials = 12)))
    return unittest.end(env)

grid_size_test = unittest.make(_grid_size_test_impl)

def _is_identifier_test_impl(ctx):
    env = unittest.begin(ctx)
    for ok in ["C", "max_iter", "_x", "lr2"]:
        asserts.true(env, is_identifier(ok), ok)
    for bad in ["", "2x", "a-b", "a b", "a.b", "é"]:
        asserts.false(env, is_identifier(bad), bad)
    return unittest.end(env)

is_identifier_test = unittest.make(_is_identifier_test_impl)

def grid_test_suite(name):
    unittest.suite(
        name,
        expand_test,
        stable_names_test,
        value_to_name_test,
        unambiguous_names_test,
        grid_size_test,
        is_identifier_test,
    )
