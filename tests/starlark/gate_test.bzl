"""Unit tests of metrics_test's number check (databazel/private/gate.bzl)."""

load("@bazel_skylib//lib:unittest.bzl", "asserts", "unittest")

# buildifier: disable=bzl-visibility
load("//databazel/private:gate.bzl", "is_number")

def _is_number_test_impl(ctx):
    env = unittest.begin(ctx)
    for text in ["0.9", "-1", "+2", "1e-3", ".5", "5.", "1E+3", " 0.25 ", "0", "0e999", "1e-999"]:
        asserts.true(env, is_number(text), text)
    for text in ["", ".", "e3", "1e", "1e+", "high", "1.2.3", "0x10", "nan", "inf", "1_000", "--1"]:
        asserts.false(env, is_number(text), text)
    return unittest.end(env)

is_number_test = unittest.make(_is_number_test_impl)

def _finite_test_impl(ctx):
    env = unittest.begin(ctx)

    # A bar must be a finite double: Python reads 1e999 as infinity.
    for text in ["1e308", "1.7976931348623157e308", "17976931348623157e292", "0.00017976931348623157e312", "-1.7e308", "1" + "0" * 308]:
        asserts.true(env, is_number(text), text)
    for text in ["1e999", "-1e999", "1.8e308", "1.79769313486232e308", "18e307", "0.1e310", "1" + "0" * 309, "1" + "0" * 400 + "e-1", "1e9999999"]:
        asserts.false(env, is_number(text), text)
    return unittest.end(env)

finite_test = unittest.make(_finite_test_impl)

def gate_test_suite(name):
    unittest.suite(
        name,
        is_number_test,
        finite_test,
    )
