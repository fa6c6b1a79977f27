"""Unit tests of command-line templates (databazel/private/templates.bzl)."""

load("@bazel_skylib//lib:unittest.bzl", "asserts", "unittest")

# buildifier: disable=bzl-visibility
load("//databazel/private:templates.bzl", "check_templates", "parse_template")
load(":template_cases.bzl", "TEMPLATE_CASES")

def _parse_test_impl(ctx):
    env = unittest.begin(ctx)
    for template, placeholders, error in TEMPLATE_CASES:
        parsed = parse_template(template)
        if placeholders == None:
            asserts.equals(env, error, parsed.error, template)
        else:
            asserts.equals(env, None, parsed.error, template)
            asserts.equals(env, placeholders, parsed.placeholders, template)
    return unittest.end(env)

parse_test = unittest.make(_parse_test_impl)

_WANDB = ["--lr={hp.lr}", "--batch-size={hp.batch_size}", "--out", "{model_output_path}", "{data}"]

def _error(templates, kind = "train", names = ["lr", "batch_size"], epochs = False, attr_name = "args"):
    return check_templates(attr_name, templates, kind, names, epochs).error

def _valid_test_impl(ctx):
    env = unittest.begin(ctx)
    checked = check_templates("args", _WANDB, "train", ["lr", "batch_size"])
    asserts.equals(env, None, checked.error)
    asserts.equals(env, ["hp.lr", "hp.batch_size", "model_output_path", "data"], checked.placeholders.keys())

    # Hyperparameter names unknown at analysis (`hyperparams_file`): any `{hp.NAME}`.
    asserts.equals(env, None, _error(_WANDB + ["{hp.anything}"], names = None))
    asserts.equals(env, None, _error(["--epoch={epoch}", "--resume-from", "{init_model_path}", "{model_output_path}"], epochs = True))
    asserts.equals(env, None, _error(["--output-file", "{metrics_file}"], kind = "evaluate"))
    asserts.equals(env, None, _error(["{output_dir}"], kind = "evaluate"))
    asserts.equals(env, None, _error(["{{literal}}", "{model_output_path}"]))
    return unittest.end(env)

valid_test = unittest.make(_valid_test_impl)

def _errors_test_impl(ctx):
    env = unittest.begin(ctx)
    asserts.equals(
        env,
        "`args` entry \"--x={bogus}\" has the unknown placeholder `{bogus}`; a training script's placeholders are `{data}`, `{model_output_path}`, `{hyperparams}`, `{epoch}`, `{init_model_path}`, `{hp.NAME}` (write `{{` and `}}` for literal braces)",
        _error(["--x={bogus}", "{model_output_path}"]),
    )
    asserts.equals(
        env,
        "`eval_args` entry \"{data}\" has the unknown placeholder `{data}` (did you mean `{data_path}`?); an evaluation script's placeholders are `{model_path}`, `{data_path}`, `{output_dir}`, `{metrics_file}` (write `{{` and `}}` for literal braces)",
        _error(["{data}", "{metrics_file}"], kind = "evaluate", attr_name = "eval_args"),
    )
    asserts.true(env, "(an evaluation script gets no hyperparameters)" in _error(["{hp.lr}", "{metrics_file}"], kind = "evaluate"))
    asserts.true(env, "(did you mean `{data}`?)" in _error(["{data_path}", "{model_output_path}"]))

    # `{hp.NAME}` needs an identifier: `{hp.}` and `{hp.a-b}` are unknown placeholders.
    asserts.true(env, "unknown placeholder `{hp.}`" in _error(["{hp.}", "{model_output_path}"]))
    asserts.true(env, "unknown placeholder `{hp.a-b}`" in _error(["{hp.a-b}", "{model_output_path}"]))
    asserts.equals(
        env,
        "`args` entry \"--momentum={hp.momentum}\" uses `{hp.momentum}`, but there is no hyperparameter `momentum` (the hyperparameters are: batch_size, lr)",
        _error(_WANDB + ["--momentum={hp.momentum}"]),
    )
    asserts.true(env, "(the hyperparameters are: none)" in _error(_WANDB, names = []))
    asserts.true(env, "use `{epoch}`, the epoch an action trains" in _error(_WANDB + ["{hp.epochs}"], epochs = True))
    asserts.equals(
        env,
        "`args` has no `{model_output_path}`: only through it is the script told where to write the model (such as \"--output={model_output_path}\")",
        _error(["--lr={hp.lr}"]),
    )
    asserts.true(env, "`args` has no `{model_output_path}`" in _error([]))
    asserts.equals(
        env,
        "`args` has neither `{metrics_file}` nor `{output_dir}`: only through one of them is the script told where to write its metrics (such as \"--output-file={metrics_file}\")",
        _error(["{model_path}", "{data_path}"], kind = "evaluate"),
    )
    asserts.equals(
        env,
        "`args` has no `{epoch}`, but the model trains in epochs, one action each: the script must be told which epoch it trains (such as \"--epoch={epoch}\")",
        _error(["{model_output_path}", "{init_model_path}"], epochs = True),
    )
    asserts.true(env, "`args` has no `{init_model_path}`, but the model trains in epochs" in _error(["{model_output_path}", "{epoch}"], epochs = True))
    asserts.equals(
        env,
        "`args` entry \"--epoch={epoch}\" uses `{epoch}`, which only a model trained in epochs (`epochs = N`) has",
        _error(["{model_output_path}", "--epoch={epoch}"]),
    )
    asserts.true(env, "uses `{init_model_path}`, which only a model trained in epochs" in _error(["{model_output_path}", "{init_model_path}"]))
    asserts.equals(
        env,
        "`args` entry \"--lr={hp.lr\" has a `{` with no closing `}` (write `{{` for a literal `{`)",
        _error(["--lr={hp.lr", "{model_output_path}"]),
    )
    asserts.true(env, "has a `}` with no opening `{`" in _error(["{model_output_path}}"]))
    asserts.true(env, "contains a NUL byte" in _error(["{model_output_path}\0"]))
    asserts.equals(env, "`args` must be a list of strings, got [1]", _error([1]))
    asserts.equals(env, "`args` must be a list of strings, got \"--lr\"", _error("--lr"))
    return unittest.end(env)

errors_test = unittest.make(_errors_test_impl)

def templates_test_suite(name):
    unittest.suite(
        name,
        parse_test,
        valid_test,
        errors_test,
    )
