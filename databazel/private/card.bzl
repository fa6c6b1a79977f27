"""Lineage cards: small actions that describe a model file in JSON (see card.py).

Each card is written by its own action, after the training or evaluation it
describes, never by them: a change to the card format re-runs card actions
only, and nothing re-trains. Cards are in output group `cards`, so building a
model costs no card action unless the cards are asked for.
"""

load(":common.bzl", "DEFAULT_ENV", "TOOL", "dependencies", "python_runtime", "resolve_script")

# The private attributes of the rules that write cards.
CARD_ATTRS = {
    "_tool": TOOL,
    "_card_modules": attr.label(
        default = Label("//databazel/private:card_modules"),
        allow_files = True,
    ),
}

def _pair(f):
    """`[short_path, exec_path]` of a file, for card.py."""
    return json.encode([f.short_path, f.path])

def _dist_info(f):
    """The `name-version.dist-info` directory `f` lies in, or None."""
    path = f.path
    end = path.find(".dist-info/")
    if end < 0:
        return None
    return path[path.rfind("/", 0, end) + 1:end + len(".dist-info")]

def add_python_packages(args, files):
    """Adds `--dist-info NAME-VERSION.dist-info` for each distribution among `files`.

    The names are taken from the paths when the action runs, not by flattening
    the Python environment's files during analysis; card.py turns them into
    `{distribution: version}`.

    Args:
      args: an Args object.
      files: a depset of the Python files an action had (the interpreter's
        runtime files, the `PyInfo` sources of its deps, a py_binary's runfiles).
    """
    args.add_all(files, map_each = _dist_info, before_each = "--dist-info", uniquify = True, expand_directories = False)

def _run_card(ctx, subcommand, args, inputs, output, what):
    python = python_runtime(ctx)
    head = ctx.actions.args()
    head.add("-S")
    head.add(ctx.file._tool)
    head.add("card")
    head.add(subcommand)
    head.add("--target", str(ctx.label))
    head.add("--output", output)
    ctx.actions.run(
        executable = python.executable,
        arguments = [head, args],
        inputs = depset(ctx.files._card_modules, transitive = [inputs, python.files]),
        outputs = [output],
        mnemonic = "DatabazelCard",
        progress_message = "Writing the lineage card of {}".format(what),
        use_default_shell_env = False,
        env = DEFAULT_ENV,
    )

def model_card(ctx, model_file, hyperparams_file, training_data, epoch, previous):
    """Registers the card of a `model` target's model file or checkpoint.

    Args:
      ctx: the `model` rule's context.
      model_file: the model file (or epoch `epoch`'s checkpoint).
      hyperparams_file: the JSON file of the hyperparameters.
      training_data: depset of the training data.
      epoch: the epoch, or None for a model trained in one step.
      previous: the checkpoint the epoch resumed from, or None.

    Returns:
      The card, `<model file>.card.json`.
    """
    card = ctx.actions.declare_file(model_file.basename + ".card.json", sibling = model_file)
    script = resolve_script(ctx, "train_executable")
    target = ctx.attr.train_executable
    args = ctx.actions.args()
    args.add("--model", _pair(model_file))
    args.add("--hyperparams-file", hyperparams_file)
    args.add("--script", _pair(script.file))
    args.add_all(training_data, map_each = _pair, before_each = "--data")
    if epoch:
        args.add("--epoch", str(epoch))
    if previous:
        args.add("--resumed-from", _pair(previous))

    # Distributions may come with the interpreter, through `deps` (their
    # sources, or their runfiles when the dist-info files are data), or in a
    # py_binary script's runfiles.
    packages = [python_runtime(ctx).files, dependencies(ctx).sources]
    packages.extend([d[DefaultInfo].default_runfiles.files for d in ctx.attr.deps])
    if not script.python:
        packages.append(target[DefaultInfo].default_runfiles.files)
    add_python_packages(args, depset(transitive = packages))
    inputs = depset([model_file, hyperparams_file, script.file] + ([previous] if previous else []), transitive = [training_data])
    _run_card(ctx, "model", args, inputs, card, "{}{}".format(ctx.label, ", epoch {}".format(epoch) if epoch else ""))
    return card

def evaluated_card(ctx, model_card_file, metrics_file, prefix):
    """Registers the card of an evaluated model: its model card and the metrics.

    Args:
      ctx: the `evaluate` rule's context.
      model_card_file: the card of the evaluated model (or checkpoint).
      metrics_file: the evaluation's metrics (or failure record).
      prefix: the evaluation's output prefix (`<name>` or `<name>.epoch-K`).

    Returns:
      The card, `<prefix>.card.json`.
    """
    card = ctx.actions.declare_file(prefix + ".card.json")
    args = ctx.actions.args()
    args.add("--card", model_card_file)
    args.add("--metrics", metrics_file)
    _run_card(ctx, "evaluated", args, depset([model_card_file, metrics_file]), card, "{} (evaluated)".format(ctx.label))
    return card

def best_card(ctx, report_json, best_model, trials):
    """Registers the card of a search's best model.

    Args:
      ctx: the `search_report` rule's context.
      report_json: the report, which names the best trial.
      best_model: the copy of the best trial's model.
      trials: the MetricsInfo of every trial.

    Returns:
      The card, `<name>.best.card.json`.
    """
    card = ctx.actions.declare_file(ctx.label.name + ".best.card.json")
    args = ctx.actions.args()
    args.add("--report", report_json)
    args.add("--best-model", _pair(best_model))
    args.add("--metric", ctx.attr.metric)
    args.add("--mode", ctx.attr.mode)
    for t in trials:
        args.add("--trial", json.encode([str(t.model.label), t.model.card.path, t.metrics_file.path, str(t.label)]))
    inputs = depset([report_json, best_model] + [t.model.card for t in trials] + [t.metrics_file for t in trials])
    _run_card(ctx, "best", args, inputs, card, "{}'s best model".format(ctx.label))
    return card
