"""The `evaluate` rule: evaluating a model is building its metrics file."""

load(":common.bzl", "COMMON_ATTRS", "PY_TOOLCHAIN_TYPE", "describe_hyperparams", "run_runner", "script_attr")
load(":providers.bzl", "MetricsInfo", "ModelInfo")

def _evaluate_impl(ctx):
    model_info = ctx.attr.model[ModelInfo]
    metrics_file = ctx.actions.declare_file(ctx.label.name + ".metrics.json")
    output_dir = ctx.actions.declare_directory(ctx.label.name + ".outputs")
    test_data = ctx.attr.test_data.files
    if not test_data.to_list():
        fail("{}: `test_data` {} provides no files".format(ctx.label, ctx.attr.test_data.label))

    args = ctx.actions.args()
    args.add("--model", model_info.model_file)
    args.add_all(test_data, before_each = "--data")
    args.add("--metrics-output", metrics_file)
    args.add("--output-dir", output_dir.path)

    run_runner(
        ctx,
        subcommand = "evaluate",
        script_attr_name = "eval_executable",
        arguments = args,
        inputs = depset([model_info.model_file], transitive = [test_data]),
        outputs = [metrics_file, output_dir],
        mnemonic = "DatabazelEvaluate",
        progress_message = "Evaluating {}{}".format(model_info.label, describe_hyperparams(model_info.hyperparams)),
    )
    return [
        DefaultInfo(files = depset([metrics_file])),
        OutputGroupInfo(outputs_dir = depset([output_dir])),
        MetricsInfo(
            metrics_file = metrics_file,
            output_dir = output_dir,
            model = model_info,
            test_data = test_data,
            label = ctx.label,
        ),
    ]

evaluate = rule(
    implementation = _evaluate_impl,
    doc = """Evaluates a model: runs the user's evaluation script and builds a metrics file.

The script is called as

    SCRIPT --model-path MODEL --data-path DATA --output-dir DIR

and must write `DIR/metrics.json`: a flat JSON object of finite numbers, such as
`{"accuracy": 0.97, "log_loss": 0.11}`. databazel checks it and writes it,
canonicalised, to `<name>.metrics.json`. `DIR` itself, with everything the
script wrote into it, is the directory `<name>.outputs` (output group
`outputs_dir`).
""",
    attrs = dict(COMMON_ATTRS, **{
        "eval_executable": script_attr(
            "The evaluation script: an executable target (such as a `py_binary`) or a single `.py` file that databazel runs with the Python toolchain's interpreter.",
        ),
        "model": attr.label(
            mandatory = True,
            providers = [ModelInfo],
            doc = "The `model` target to evaluate (any target providing `ModelInfo`).",
        ),
        "test_data": attr.label(
            mandatory = True,
            allow_files = True,
            doc = "The evaluation data: any label with files.",
        ),
    }),
    provides = [MetricsInfo],
    toolchains = [PY_TOOLCHAIN_TYPE],
)
