"""The `model` rule: training a model is building its file."""

load("@bazel_skylib//lib:paths.bzl", "paths")
load(":card.bzl", "CARD_ATTRS", "model_card")
load(":common.bzl", "COMMON_ATTRS", "PY_TOOLCHAIN_TYPE", "describe_hyperparams", "run_runner", "runner_arguments", "script_attr")
load(":grid.bzl", "is_identifier")
load(":providers.bzl", "ModelInfo")
load(":renamed.bzl", "renamed")
load(":templates.bzl", "check_train_template")

def checkpoint_name(model_name, epoch):
    """The file name of epoch `epoch`'s checkpoint of a model named `model_name`.

    `.epoch-K` goes before the extension of the file name: `m.model` gives
    `m.epoch-3.model`, `m/model.pkl` gives `m/model.epoch-3.pkl`, `m/weights`
    gives `m/weights.epoch-3`. It depends only on the model's name and K, never
    on the number of epochs, so that epoch K's action is the same whatever it is.

    Args:
      model_name: the model's file name, relative to the package.
      epoch: the epoch, from 1.

    Returns:
      A file name relative to the package.
    """
    root, extension = paths.split_extension(model_name)
    return "{}.epoch-{}{}".format(root, epoch, extension)

# Linux's limit on one command-line argument (MAX_ARG_STRLEN, 32 pages): the
# --hyperparams JSON must stay under it.
MAX_ARGUMENT_BYTES = 128 * 1024

def check_model_name(ctx, model_name):
    """Fails naming the target unless `model_name` is a file name inside its package.

    Args:
      ctx: the model rule's context.
      model_name: the model's file name, relative to the package.
    """
    problem = None
    if model_name.startswith("/"):
        problem = "is an absolute path"
    elif model_name.endswith("/"):
        problem = "ends with `/`"
    elif [p for p in model_name.split("/") if p in ("", ".", "..")]:
        problem = "has an empty, `.` or `..` component"
    elif model_name.endswith(".hyperparams.json"):
        problem = "ends with `.hyperparams.json`, the name of the file databazel writes each model's hyperparameters to"
    elif "\0" in model_name or "\n" in model_name:
        problem = "contains a NUL byte or a newline"
    if problem:
        fail("{}: `model_file` {} {}; give a file name relative to the package, such as \"{}.pkl\" or \"models/{}.pkl\"".format(
            ctx.label,
            repr(model_name),
            problem,
            ctx.label.name,
            ctx.label.name,
        ))

def write_hyperparams(ctx, name, hyperparams):
    """Checks a model's hyperparameters and writes them to `<name>.hyperparams.json`.

    Args:
      ctx: the context of a rule training a model.
      name: the model's name (the file's prefix).
      hyperparams: dict of string hyperparameters.

    Returns:
      The JSON file (keys sorted: their order in the BUILD file changes no cache key).
    """
    for key in hyperparams:
        if not is_identifier(key):
            fail("{}: hyperparams key {} is not a valid hyperparameter name: use letters, digits and `_`, not starting with a digit".format(ctx.label, repr(key)))
    for key, value in hyperparams.items():
        if "\0" in value:
            fail("{}: hyperparameter {} contains a NUL byte, which no command-line argument can hold".format(ctx.label, key))
    encoded = json.encode(hyperparams)
    if len(encoded) >= MAX_ARGUMENT_BYTES:
        sizes = sorted([(len(v), k) for k, v in hyperparams.items()], reverse = True)
        fail("{}: the hyperparameters take {} bytes as the JSON of --hyperparams, over Linux's limit of {} bytes for one command-line argument (MAX_ARG_STRLEN); the longest is {} ({} bytes): pass large values in a file of `data` and its name as the hyperparameter".format(
            ctx.label,
            len(encoded),
            MAX_ARGUMENT_BYTES,
            sizes[0][1],
            sizes[0][0],
        ))
    hyperparams_file = ctx.actions.declare_file(name + ".hyperparams.json")
    ctx.actions.write(hyperparams_file, encoded)
    return hyperparams_file

def train_step(ctx, target, hyperparams, hyperparams_file, training_data, output, epoch = None, previous = None, decision = None, template = []):
    """Registers one training action (the whole training, or one epoch) and its lineage card.

    Args:
      ctx: the context of a rule with `train_executable` and COMMON_ATTRS.
      target: the label the runner names (`--target`).
      hyperparams: dict of the hyperparameters, for the progress message.
      hyperparams_file: the JSON file of the hyperparameters.
      training_data: depset of the training data.
      output: the model file or checkpoint to write.
      epoch: the epoch (from 1), or None for a model trained in one step.
      previous: the checkpoint epoch `epoch` - 1 wrote, or None.
      decision: an early-stopping rung's decision for this epoch, or None.
      template: the checked command-line template (`args`); empty: the fixed command line.

    Returns:
      The lineage card of `output`.
    """
    args = runner_arguments(ctx, "train")
    args.add("--hyperparams-file", hyperparams_file)
    args.add("--model-output-path", output)
    args.add_all(training_data, before_each = "--data")
    if epoch:
        args.add("--epoch", str(epoch))
    if previous:
        args.add("--init-model-path", previous)
    if decision:
        args.add("--decision", decision)
    if template:
        # JSON: one line of the params file, whatever the template holds.
        args.add("--args", json.encode(template))
    run_runner(
        ctx,
        script_attr_name = "train_executable",
        arguments = args,
        inputs = depset([hyperparams_file] + [f for f in (previous, decision) if f], transitive = [training_data]),
        outputs = [output],
        mnemonic = "DatabazelTrain",
        progress_message = "Training {}{}{}".format(
            target,
            ", epoch {}".format(epoch) if epoch else "",
            describe_hyperparams(hyperparams),
        ),
        target = target,
    )
    return model_card(ctx, output, hyperparams_file, training_data, epoch, previous)

def _hyperparams_source(ctx):
    """The file of `hyperparams_file`, or None; fails if `hyperparams` is given too."""
    if ctx.file.hyperparams_file and ctx.attr.hyperparams:
        fail("{}: give the hyperparameters either in `hyperparams` or in `hyperparams_file`, not both".format(ctx.label))
    return ctx.file.hyperparams_file

def _model_impl(ctx):
    if ctx.attr.epochs < 0:
        fail("{}: `epochs` must be a positive number of epochs (or 0: train in one step, without epochs); got {}".format(ctx.label, ctx.attr.epochs))
    model_name = renamed(ctx.label, "model", ctx.attr.model, "model_file", ctx.attr.model_file, unset = "") or ctx.label.name + ".model"
    check_model_name(ctx, model_name)
    hyperparams_file = _hyperparams_source(ctx) or write_hyperparams(ctx, ctx.label.name, ctx.attr.hyperparams)
    training_data = ctx.attr.training_data.files
    if not training_data.to_list():
        fail("{}: `training_data` {} provides no files".format(ctx.label, ctx.attr.training_data.label))
    check_train_template(ctx.label, "args", ctx.attr.args, None if ctx.file.hyperparams_file else ctx.attr.hyperparams.keys(), ctx.attr.epochs > 0)

    # Without epochs: one action. With N epochs: a chain of N actions, epoch K
    # reading the checkpoint of epoch K - 1. Nothing of epoch K's action (its
    # command line, inputs, output path) depends on N: raising N adds actions,
    # lowering it drops some, and the others stay cached.
    checkpoints = []
    cards = []
    for epoch in range(1, ctx.attr.epochs + 1) if ctx.attr.epochs else [None]:
        output = ctx.actions.declare_file(checkpoint_name(model_name, epoch) if epoch else model_name)
        previous = checkpoints[-1] if checkpoints else None
        cards.append(train_step(ctx, ctx.label, ctx.attr.hyperparams, hyperparams_file, training_data, output, epoch, previous, template = ctx.attr.args))
        checkpoints.append(output)
    model_file = checkpoints[-1]
    return [
        DefaultInfo(files = depset([model_file])),
        OutputGroupInfo(
            cards = depset(cards),
            **{"epoch_{}".format(k): depset([f]) for k, f in enumerate(checkpoints, start = 1) if ctx.attr.epochs}
        ),
        ModelInfo(
            model_file = model_file,
            hyperparams = dict(ctx.attr.hyperparams),
            hyperparams_file = hyperparams_file,
            training_data = training_data,
            label = ctx.label,
            checkpoints = checkpoints if ctx.attr.epochs else [],
            card = cards[-1],
            checkpoint_cards = cards if ctx.attr.epochs else [],
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

With `epochs = N`, training is N chained actions, one per epoch. Epoch K runs

    SCRIPT --data DATA --model-output-path OUT --hyperparams '{...}' --epoch K [--init-model-path PREVIOUS]

where `PREVIOUS` (from the second epoch on) is the checkpoint epoch K - 1
wrote; the script resumes from it, trains one epoch and writes the new
checkpoint to `OUT`. Epoch K's checkpoint is `<name>.epoch-K.model` (with
`model_file = "dir/model.pkl"`: `dir/model.epoch-K.pkl`), in output group
`epoch_K`; the target's output is the last one. Epoch K's action does not
depend on N: raising `epochs` runs only the new epochs, lowering it runs
nothing, and an interrupted build resumes at the first unfinished epoch.

With `args`, the script gets those arguments instead, each one argument
(never split, no shell) with its placeholders filled in: `{data}`,
`{model_output_path}`, `{hyperparams}` (the JSON above), `{hp.NAME}` (one
hyperparameter), and with `epochs` `{epoch}` and `{init_model_path}`; `{{`
and `}}` are literal braces. A W&B-style script, for example:

    args = ["--train={data}", "--out={model_output_path}", "--lr={hp.lr}"]

See docs/contract.md#your-own-command-line.

Every model file and checkpoint has a lineage card, `<model file>.card.json`
(sha256 of the model, the label, hyperparameters, sha256 of each training-data
file and of the script, the Python packages, the checkpoint it resumed from),
in output group `cards`: `bazel build --output_groups=+cards //pkg:name`.
""",
    attrs = dict(COMMON_ATTRS, **dict(CARD_ATTRS, **{
        "args": attr.string_list(
            doc = "The script's command line, as templates (see above and docs/contract.md): the script gets exactly these arguments, one each, with `{data}`, `{model_output_path}` (required), `{hyperparams}`, `{hp.NAME}`, and with `epochs` `{epoch}` and `{init_model_path}` (both required; in epoch 1 an argument holding `{init_model_path}` is left out, and when the placeholder stands alone, so is an option just before it) filled in. A mistake (an unknown placeholder, a hyperparameter the model does not have, unbalanced braces) fails naming the target. Empty: the fixed command line above. Part of the cache key.",
        ),
        "epochs": attr.int(
            default = 0,
            doc = "Train in this many epochs, one action each, chained through checkpoints (see above). 0: one action, and the script gets neither `--epoch` nor `--init-model-path`.",
        ),
        "hyperparams": attr.string_dict(
            doc = "Hyperparameters, given to the script as one JSON object of strings in `--hyperparams`.",
        ),
        "hyperparams_file": attr.label(
            allow_single_file = [".json"],
            doc = "A file with the hyperparameters instead of `hyperparams` (not both): a JSON object of strings, such as the suggestions of a model-based search's round. The script gets the same `--hyperparams` JSON. It is an input, so a changed file re-trains.",
        ),
        "model": attr.string(
            doc = "Deprecated: the old name of `model_file`, accepted until databazel 0.2.0 with a message.",
        ),
        "model_file": attr.string(
            doc = "File name of the model output, relative to the package (`model.pkl`, `out/model.pkl`; not absolute, without `..`, not ending in `.hyperparams.json`). Default: `<name>.model`.",
        ),
        "train_executable": script_attr(
            "The training script: an executable target (such as a `py_binary`) or a single `.py` file that databazel runs with the Python toolchain's interpreter.",
        ),
        "training_data": attr.label(
            mandatory = True,
            allow_files = True,
            doc = "The training data: any label with files (a file, a `filegroup`, a generated file, an `http_file`). Not a directory of the source tree, whose changes Bazel does not see: list its files with `glob([\"dir/**\"])` (the trial fails saying so).",
        ),
    })),
    provides = [ModelInfo],
    toolchains = [PY_TOOLCHAIN_TYPE],
)
