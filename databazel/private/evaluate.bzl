"""The `evaluate` rule: evaluating a model is building its metrics file."""

load(":card.bzl", "CARD_ATTRS", "evaluated_card")
load(":common.bzl", "COMMON_ATTRS", "PY_TOOLCHAIN_TYPE", "describe_hyperparams", "run_runner", "runner_arguments", "script_attr")
load(":providers.bzl", "MetricsInfo", "ModelInfo")
load(":renamed.bzl", "renamed")
load(":templates.bzl", "check_eval_template")

def check_ignore_metrics(where, ignore_metrics):
    """Fails naming `where` unless `ignore_metrics` is a list of distinct, non-empty names.

    Args:
      where: the target (or search) to name.
      ignore_metrics: the value of `ignore_metrics`.
    """
    if type(ignore_metrics) != "list" or [n for n in ignore_metrics if type(n) != "string" or not n]:
        fail("{}: `ignore_metrics` must be a list of the names (non-empty strings) of entries of the metrics file that are not metrics, got {}".format(where, repr(ignore_metrics)))
    for i, name in enumerate(ignore_metrics):
        if name in ignore_metrics[:i]:
            fail("{}: `ignore_metrics` lists {} twice".format(where, json.encode(name)))

def evaluate_step(ctx, target, model_info, model_file, model_card, test_data, prefix, epoch, decision = None, template = []):
    """Registers the evaluation of `model_file` and the card of the result.

    Args:
      ctx: the context of a rule with `eval_executable` and COMMON_ATTRS.
      target: the label the runner names (`--target`).
      model_info: the ModelInfo of the evaluated model (its label and hyperparameters).
      model_file: the model file or checkpoint to evaluate.
      model_card: the lineage card of `model_file`.
      test_data: depset of the evaluation data.
      prefix: the outputs' prefix: `<prefix>.metrics.json`, `<prefix>.outputs`.
      epoch: the evaluated checkpoint's epoch, or None.
      decision: an early-stopping rung's decision for this epoch, or None.
      template: the checked command-line template (`args`); empty: the fixed command line.

    Returns:
      struct(metrics_file, output_dir, card).
    """
    metrics_file = ctx.actions.declare_file(prefix + ".metrics.json")
    output_dir = ctx.actions.declare_directory(prefix + ".outputs")
    args = runner_arguments(ctx, "evaluate")
    args.add("--model-path", model_file)
    args.add_all(test_data, before_each = "--data")
    args.add("--metrics-output", metrics_file)
    args.add("--output-dir", output_dir.path)
    if decision:
        args.add("--decision", decision)
    args.add_all(ctx.attr.ignore_metrics, before_each = "--ignore-metric")
    if template:
        # JSON: one line of the params file, whatever the template holds.
        args.add("--args", json.encode(template))
    run_runner(
        ctx,
        script_attr_name = "eval_executable",
        arguments = args,
        inputs = depset([model_file] + ([decision] if decision else []), transitive = [test_data]),
        outputs = [metrics_file, output_dir],
        mnemonic = "DatabazelEvaluate",
        # The evaluate target first: Bazel's error line for a failed action
        # names the target through this message.
        progress_message = "Evaluating {}: model {}{}{}".format(
            target,
            model_info.label,
            ", epoch {}".format(epoch) if epoch else "",
            describe_hyperparams(model_info.hyperparams),
        ),
        target = target,
    )
    card = evaluated_card(ctx, model_card, metrics_file, prefix)
    return struct(metrics_file = metrics_file, output_dir = output_dir, card = card)

def _evaluate_impl(ctx):
    model_info = ctx.attr.model[ModelInfo]
    test_data = ctx.attr.test_data.files
    if not test_data.to_list():
        fail("{}: `test_data` {} provides no files".format(ctx.label, ctx.attr.test_data.label))
    check_eval_template(ctx.label, "args", ctx.attr.args)
    check_ignore_metrics(ctx.label, ctx.attr.ignore_metrics)
    checkpoints = model_info.checkpoints
    evaluated_epochs = renamed(ctx.label, "epochs", ctx.attr.epochs, "evaluated_epochs", ctx.attr.evaluated_epochs, unset = [])
    if (ctx.attr.learning_curve or evaluated_epochs) and not checkpoints:
        fail("{}: `learning_curve` and `evaluated_epochs` evaluate the checkpoints of a model trained in epochs, but {} has none; give it `epochs = N`".format(ctx.label, model_info.label))
    for epoch in evaluated_epochs:
        if epoch < 1 or epoch > len(checkpoints):
            fail("{}: `evaluated_epochs` lists epoch {}, but {} has epochs 1 to {}".format(ctx.label, epoch, model_info.label, len(checkpoints)))
    if not checkpoints:
        evaluation = evaluate_step(ctx, ctx.label, model_info, model_info.model_file, model_info.card, test_data, ctx.label.name, None, template = ctx.attr.args)
        epoch_evaluations = {}
    else:
        # One action per evaluated epoch, each a function of its checkpoint
        # only: `<name>.epoch-K.metrics.json` does not depend on how many
        # epochs the model has. The last epoch is always evaluated.
        wanted = list(range(1, len(checkpoints) + 1)) if ctx.attr.learning_curve else evaluated_epochs
        epoch_evaluations = {}
        for epoch in sorted({k: True for k in wanted + [len(checkpoints)]}.keys()):
            epoch_evaluations[epoch] = evaluate_step(
                ctx,
                ctx.label,
                model_info,
                checkpoints[epoch - 1],
                model_info.checkpoint_cards[epoch - 1],
                test_data,
                "{}.epoch-{}".format(ctx.label.name, epoch),
                epoch,
                template = ctx.attr.args,
            )
        evaluation = epoch_evaluations[len(checkpoints)]
    return evaluation_providers(ctx, evaluation, model_info, test_data, epoch_evaluations)

def evaluation_providers(ctx, evaluation, model_info, test_data, epoch_evaluations, early_stopping = None):
    """What a target whose result is an evaluation returns: its metrics file, output groups and MetricsInfo.

    Args:
      ctx: the target's rule context.
      evaluation: struct(metrics_file, output_dir, card): the evaluation that is the result.
      model_info: the ModelInfo of the evaluated model.
      test_data: depset of the evaluation data.
      epoch_evaluations: dict from epoch to the evaluation of that epoch's checkpoint (may be empty).
      early_stopping: for a trial of a search with early stopping, struct(rungs, bracket).

    Returns:
      [DefaultInfo, OutputGroupInfo, MetricsInfo].
    """
    return [
        DefaultInfo(files = depset([evaluation.metrics_file])),
        OutputGroupInfo(
            outputs_dir = depset([evaluation.output_dir]),
            epoch_metrics = depset([e.metrics_file for e in epoch_evaluations.values()]),
            cards = depset([evaluation.card] + [e.card for e in epoch_evaluations.values()]),
        ),
        MetricsInfo(
            metrics_file = evaluation.metrics_file,
            output_dir = evaluation.output_dir,
            model = model_info,
            test_data = test_data,
            label = ctx.label,
            epoch_evaluations = epoch_evaluations,
            card = evaluation.card,
            early_stopping = early_stopping,
        ),
    ]

evaluate = rule(
    implementation = _evaluate_impl,
    doc = """Evaluates a model: runs the user's evaluation script and builds a metrics file.

The script is called as

    SCRIPT --model-path MODEL --data-path DATA --output-dir DIR

and must write `DIR/metrics.json`: a flat JSON object of finite numbers, such as
`{"accuracy": 0.97, "log_loss": 0.11}`. databazel checks it and writes it,
canonicalised, to `<name>.metrics.json`, without the entries `ignore_metrics`
names. `DIR` itself, with everything the script wrote into it, is the
directory `<name>.outputs` (output group `outputs_dir`).

With `args`, the script gets those arguments instead, each one argument with
its placeholders filled in: `{model_path}`, `{data_path}`, `{output_dir}` and
`{metrics_file}` (`DIR/metrics.json`, where the script writes its metrics).
The 2019 databazel evaluation script, for example:

    args = ["--model-path", "{model_path}", "--data-path", "{data_path}", "--output-file", "{metrics_file}"],
    ignore_metrics = ["model"],

See docs/contract.md#your-own-command-line.

For a model trained in epochs (`model(epochs = N)`), the model evaluated is
the last checkpoint, and the outputs are named after the epoch:
`<name>.epoch-N.metrics.json` and `<name>.epoch-N.outputs`, so that raising
`epochs` evaluates only the new last checkpoint. `learning_curve = True`
evaluates every epoch's checkpoint (`evaluated_epochs = [...]` some of them), one
action each; `search_report` draws the metric against the epoch from them.
Their metrics files are in output group `epoch_metrics`.

Output group `cards` has the lineage card of the evaluated model with the
metrics, `<name>.card.json` (for a model trained in epochs,
`<name>.epoch-K.card.json` for each evaluated checkpoint).
""",
    attrs = dict(COMMON_ATTRS, **dict(CARD_ATTRS, **{
        "args": attr.string_list(
            doc = "The script's command line, as templates (see above and docs/contract.md): the script gets exactly these arguments, one each, with `{model_path}`, `{data_path}`, `{output_dir}` and `{metrics_file}` (one of the last two required) filled in. A mistake fails naming the target. Empty: the fixed command line above. Part of the cache key.",
        ),
        "epochs": attr.int_list(
            doc = "Deprecated: the old name of `evaluated_epochs`, accepted until databazel 0.2.0 with a message.",
        ),
        "evaluated_epochs": attr.int_list(
            doc = "Epochs (from 1) whose checkpoints are evaluated besides the last one's, for a model trained in epochs. (`epochs` is always a number of epochs: an attribute of `model` and `hyperparam_search`.)",
        ),
        "ignore_metrics": attr.string_list(
            doc = "Entries of the script's metrics file that are not metrics (such as the 2019 example's `\"model\"` path): left out of `<name>.metrics.json` whatever their values, so they never reach a report. Any other entry that is not a number fails the evaluation.",
        ),
        "learning_curve": attr.bool(
            default = False,
            doc = "Evaluate the checkpoint of every epoch of a model trained in epochs, not only the last (a learning curve in `search_report`).",
        ),
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
            doc = "The evaluation data: any label with files. Not a directory of the source tree: list its files with `glob([\"dir/**\"])`.",
        ),
    })),
    provides = [MetricsInfo],
    toolchains = [PY_TOOLCHAIN_TYPE],
)
