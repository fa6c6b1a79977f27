"""`metrics_test`: a quality gate, a test that fails when a model's metrics are past their bars."""

load(":common.bzl", "PY_TOOLCHAIN_TYPE", "TOOL", "python_runtime", "runfiles_launcher")
load(":providers.bzl", "MetricsInfo", "SearchReportInfo")

# The largest finite double, 1.7976931348623157e308: its exponent and digits.
_MAX_EXPONENT = 308
_MAX_DIGITS = "17976931348623157"

def is_number(text):
    """Whether `text` is a decimal number such as `0.9`, `-1`, `1e-3` or `.5`.

    Args:
      text: the string to check.

    Returns:
      True for a decimal number that is finite as a double (`1e999` is not:
      it would be infinity).
    """
    s = text.strip()
    if s[:1] in ("+", "-"):
        s = s[1:]
    mantissa, e, exponent = s.lower().partition("e")
    negative_exponent = False
    if e:
        if exponent[:1] in ("+", "-"):
            negative_exponent = exponent[:1] == "-"
            exponent = exponent[1:]
        if not exponent.isdigit():
            return False
    whole, _, fraction = mantissa.partition(".")
    if not whole and not fraction:
        return False
    if not ((not whole or whole.isdigit()) and (not fraction or fraction.isdigit())):
        return False
    return _is_finite(whole, fraction, exponent.lstrip("0"), negative_exponent)

def _is_finite(whole, fraction, exponent, negative_exponent):
    """Whether whole.fraction x 10^(+/-exponent) (digit strings) is below the largest double."""
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return True  # zero
    if len(exponent) > 6:  # beyond any number of digits a BUILD file holds
        return negative_exponent
    integer_digits = len(whole.lstrip("0"))
    leading_zeros = len(fraction) - len(fraction.lstrip("0")) if not integer_digits else 0
    power = int(exponent or "0")

    # The power of ten of the first significant digit.
    magnitude = (integer_digits - 1 if integer_digits else -1 - leading_zeros) + (-power if negative_exponent else power)
    if magnitude != _MAX_EXPONENT:
        return magnitude < _MAX_EXPONENT
    significant = digits[:len(_MAX_DIGITS)]
    significant += "0" * (len(_MAX_DIGITS) - len(significant))
    return significant <= _MAX_DIGITS

def _metrics_test_impl(ctx):
    subject = ctx.attr.metrics
    if MetricsInfo in subject:
        metrics_file, search = subject[MetricsInfo].metrics_file, False
    else:
        metrics_file, search = subject[SearchReportInfo].json, True
    if not ctx.attr.at_least and not ctx.attr.at_most:
        fail("{}: give at least one bar: `at_least = {{\"accuracy\": \"0.9\"}}` or `at_most = {{\"log_loss\": \"0.3\"}}`".format(ctx.label))
    for bound, bars in (("at_least", ctx.attr.at_least), ("at_most", ctx.attr.at_most)):
        for metric, value in bars.items():
            if not metric:
                fail("{}: `{}` has an empty metric name".format(ctx.label, bound))
            if not is_number(value):
                fail("{}: `{}` of metric {} must be a finite number written as a string, such as \"0.9\"; got {}".format(ctx.label, bound, repr(metric), repr(value)))

    python = python_runtime(ctx)
    arguments = [
        ctx.file._tool.short_path,
        "gate",
        "--target",
        str(ctx.label),
        "--subject",
        str(subject.label),
        "--metrics-file",
        metrics_file.short_path,
    ]
    if search:
        arguments.append("--search")

    # One word each, `--at-least=NAME=NUMBER`: a metric may be named like an
    # option (`-n`), which argparse would take for one as a word of its own.
    for metric, value in sorted(ctx.attr.at_least.items()):
        arguments.append("--at-least={}={}".format(metric, value.strip()))
    for metric, value in sorted(ctx.attr.at_most.items()):
        arguments.append("--at-most={}={}".format(metric, value.strip()))
    launcher = runfiles_launcher(
        ctx,
        ctx.label.name + ".gate.sh",
        python,
        arguments,
        "Quality gate {} on the metrics of {}.".format(ctx.label, subject.label),
    )
    runfiles = ctx.runfiles(
        files = [metrics_file] + ctx.files._gate_modules,
        transitive_files = python.files,
    )
    return [DefaultInfo(executable = launcher, runfiles = runfiles)]

metrics_test = rule(
    implementation = _metrics_test_impl,
    doc = """A quality gate: a test that fails when a metric is past its bar.

```starlark
metrics_test(
    name = "bzl_eval_gate",
    metrics = ":bzl_eval",          # an `evaluate` target, or a search (its best trial)
    at_least = {"accuracy": "0.9"},
    at_most = {"log_loss": "0.5"},
)
```

`bazel test` checks every bar and prints one line per metric; a metric past
its bar fails the test with `FAILED //pkg:gate: //pkg:eval: accuracy =
0.87, below the bar: at_least 0.9`. A metric the evaluation did not produce
fails it, and so does an evaluation that recorded a failure instead of
metrics (`allow_failure`). The test's only inputs are the metrics (and the
checker), so it is cached like any test and re-runs only when they change;
it depends on the model through them, so `bazel test //...` trains and
evaluates what it needs first.
""",
    attrs = {
        "at_least": attr.string_dict(
            doc = "Lower bars: metric name to the smallest acceptable value, a number written as a string (`{\"accuracy\": \"0.9\"}`).",
        ),
        "at_most": attr.string_dict(
            doc = "Upper bars: metric name to the largest acceptable value, a number written as a string (`{\"log_loss\": \"0.5\"}`).",
        ),
        "metrics": attr.label(
            mandatory = True,
            providers = [[MetricsInfo], [SearchReportInfo]],
            doc = "What is checked: an `evaluate` target (its metrics) or a `hyperparam_search` / `search_report` target (the metrics of its best trial).",
        ),
        "_tool": TOOL,
        "_gate_modules": attr.label(
            default = Label("//databazel/private:gate_modules"),
            allow_files = True,
        ),
    },
    test = True,
    toolchains = [PY_TOOLCHAIN_TYPE],
)
