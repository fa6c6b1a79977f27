"""The `model` rule: training a model is building its file."""

load(":common.bzl", "COMMON_ATTRS", "PY_TOOLCHAIN_TYPE", "describe_hyperparams", "run_runner", "script_attr")
load(":grid.bzl", "is_identifier")
load(":providers.bzl", "ModelInfo")

def _model_impl(ctx):
    for key in ctx.attr.hyperparams:
        if not is_identifier(key):
            fail("{}: hyperparams key {} is not a valid hyperparameter name: use letters, digits and `_`, not starting with a digit".format(ctx.label, repr(key)))
    model_file = ctx.actions.declare_file(ctx.attr.model or ctx.label.name + ".model")
    hyperparams_file = ctx.actions.declare_file(ctx.label.name + ".hyperparams.json")

    # json.encode sorts keys: the order in the BUILD file does not change the cache key.
    ctx.actions.write(hyperparams_file, json.encode(ctx.attr.hyperparams))
    training_data = ctx.attr.training_data.files
    if not training_data.to_list():
        fail("{}: `training_data` {} provides no files".format(ctx.label, ctx.attr.training_data.label))

    args = ctx.actions.args()
    args.add("--hyperparams-file", hyperparams_file)
    args.add("--model-output", model_file)
    args.add_all(training_data, before_each = "--data")

    run_runner(
        ctx,
        subcommand = "train",
        script_attr_name = "train_executable",
        arguments = args,
        inputs = depset([hyperparams_file], transitive = [training_data]),
        outputs = [model_file],
        mnemonic = "DatabazelTrain",
        progress_message = "Training {}{}".format(ctx.label, describe_hyperparams(ctx.attr.hyperparams)),
    )
    return [
        DefaultInfo(files = depset([model_file])),
        ModelInfo(
            model_file = model_file,
            hyperparams = dict(ctx.attr.hyperparams),
            training_data = training_data,
            label = ctx.label,
        ),
    ]

model = rule(
    implementation = _model_impl,
    doc = """Trains a model: runs the user's training script once and builds the model file it writes.

The script is called as

    SCRIPT --data DATA --model-output-path OUT --hyperparams '{"C":"0.1",...}'

and must write the model to `OUT` and exit 0. `DATA` is the single file of
`training_data`, or a directory of links to its files when there are several.
The action is cached by Bazel: it re-runs only when the script, its deps, the
data, the hyperparameters, `env` or the Python environment change.
""",
    attrs = dict(COMMON_ATTRS, **{
        "hyperparams": attr.string_dict(
            doc = "Hyperparameters, given to the script as one JSON object of strings in `--hyperparams`.",
        ),
        "model": attr.string(
            doc = "File name of the model output, relative to the package. Default: `<name>.model`.",
        ),
        "train_executable": script_attr(
            "The training script: an executable target (such as a `py_binary`) or a single `.py` file that databazel runs with the Python toolchain's interpreter.",
        ),
        "training_data": attr.label(
            mandatory = True,
            allow_files = True,
            doc = "The training data: any label with files (a file, a `filegroup`, a generated file, an `http_file`).",
        ),
    }),
    provides = [ModelInfo],
    toolchains = [PY_TOOLCHAIN_TYPE],
)
