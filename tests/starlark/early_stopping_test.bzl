"""Unit tests of the early-stopping schedules (databazel/private/early_stopping.bzl)."""

load("@bazel_skylib//lib:unittest.bzl", "asserts", "unittest")

# buildifier: disable=bzl-visibility
load("//databazel/private:early_stopping.bzl", "brackets", "default_num_trials", "hyperband", "rung_epochs", "successive_halving")

def _rungs_test_impl(ctx):
    env = unittest.begin(ctx)
    asserts.equals(env, [1, 3, 9], rung_epochs(1, 9, 3))
    asserts.equals(env, [1, 3, 9, 27], rung_epochs(1, 27, 3))
    asserts.equals(env, [2, 4, 8, 10], rung_epochs(2, 10, 2))
    asserts.equals(env, [5], rung_epochs(5, 5, 3))

    # Successive halving is one bracket of every trial.
    [only] = brackets("//t:s", successive_halving(min_epochs = 1, max_epochs = 9, eta = 3), 9)
    asserts.equals(env, (None, 0, 9, [1, 3, 9]), (only.index, only.start, only.size, only.rungs))
    asserts.equals(env, None, default_num_trials(successive_halving(max_epochs = 9)))
    return unittest.end(env)

rungs_test = unittest.make(_rungs_test_impl)

def _hyperband_test_impl(ctx):
    env = unittest.begin(ctx)

    # Li et al. (2018), R = 27, eta = 3: n = 27, 12, 6, 4 trials starting at
    # r = 1, 3, 9, 27 epochs.
    schedule = hyperband(min_epochs = 1, max_epochs = 27, eta = 3)
    asserts.equals(env, 49, default_num_trials(schedule))
    got = [(b.index, b.start, b.size, b.rungs) for b in brackets("//t:s", schedule, 49)]
    asserts.equals(env, [
        (3, 0, 27, [1, 3, 9, 27]),
        (2, 27, 12, [3, 9, 27]),
        (1, 39, 6, [9, 27]),
        (0, 45, 4, [27]),
    ], got)

    # Fewer trials are shared in proportion (largest remainders), all used.
    sizes = [b.size for b in brackets("//t:s", schedule, 10)]
    asserts.equals(env, [6, 2, 1, 1], sizes)

    # Budgets that are not powers of eta: rungs at max // eta^(s - i).
    odd = brackets("//t:s", hyperband(min_epochs = 2, max_epochs = 20, eta = 3), 100)
    asserts.equals(env, [[2, 6, 20], [6, 20], [20]], [b.rungs for b in odd])
    asserts.equals(env, 100, odd[-1].start + odd[-1].size)
    return unittest.end(env)

hyperband_test = unittest.make(_hyperband_test_impl)

def early_stopping_test_suite(name):
    unittest.suite(name, rungs_test, hyperband_test)
