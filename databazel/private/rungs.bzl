"""Early stopping as build steps: successive halving and Hyperband over epochs.

`hyperparam_search(early_stopping = ...)` trains each trial in segments of
epochs, one target per segment, so that the graph stays static:

    <trial>__rung-0   epochs 1 .. r0           (every trial of the bracket)
    <search>__rung-0  ranks the trials at epoch r0, one decision file per trial
    <trial>__rung-1   epochs r0+1 .. r1, each gated by <trial>'s decision at rung 0
    ...
    <trial>           the last segment, up to max_epochs (the trial's model)
    <trial>__eval     its evaluations (the trial's metrics, for the report)

A segment's epochs and evaluations read only their own trial's decision: a
promoted trial's epochs run the user's script, a stopped trial's are trivial
actions that write a stop record (runner.py `--decision`). Each action is
named after the trial, not the segment (`--target //pkg:<trial>`, files
`<trial>.epoch-K.model`, `<trial>__eval.epoch-K.metrics.json`), so raising
`max_epochs`, which renames the last segment, keeps every trained epoch's key.
"""

load(":card.bzl", "CARD_ATTRS")
load(":common.bzl", "COMMON_ATTRS", "DEFAULT_ENV", "PY_TOOLCHAIN_TYPE", "TOOL", "python_runtime", "script_attr")
load(":early_stopping.bzl", "brackets", "kind")
load(":evaluate.bzl", "evaluate_step", "evaluation_providers")
load(":model.bzl", "check_model_name", "checkpoint_name", "train_step", "write_hyperparams")
load(":providers.bzl", "MetricsInfo", "ModelInfo")

_SegmentInfo = provider(
    doc = "Epochs 1 to `last_epoch` of a trial of a search with early stopping.",
    fields = {
        "trial": "str: the trial's name.",
        "hyperparams_file": "File: the trial's hyperparameters (written by its first segment).",
        "training_data": "depset[File]: the training data.",
        "test_data": "depset[File]: the evaluation data.",
        "checkpoints": "list[File]: the checkpoint of every epoch so far, epoch 1 first.",
        "cards": "list[File]: their lineage cards.",
        "epoch_evaluations": "dict[int, struct(metrics_file, output_dir, card)]: the evaluated epochs so far.",
        "early_stopping": "struct(rungs, bracket): the trial's bracket.",
    },
)

_RungInfo = provider(
    doc = "A rung's decisions: whether each trial of its bracket trains on.",
    fields = {
        "decisions": "dict[str, File]: by trial name, the decision file (`{\"status\": \"promoted\"}` or a stop record).",
    },
)

def _segment_impl(ctx):
    trial = ctx.attr.trial
    model_name = ctx.attr.model_file or trial + ".model"
    check_model_name(ctx, model_name)
    if ctx.attr.previous:
        previous = ctx.attr.previous[_SegmentInfo]
        hyperparams_file = previous.hyperparams_file
        checkpoints = list(previous.checkpoints)
        cards = list(previous.cards)
        evaluations = dict(previous.epoch_evaluations)
    else:
        hyperparams_file = write_hyperparams(ctx, trial, ctx.attr.hyperparams)
        checkpoints, cards, evaluations = [], [], {}
    if len(checkpoints) + 1 != ctx.attr.first_epoch:
        fail("{}: starts at epoch {} after {} epochs".format(ctx.label, ctx.attr.first_epoch, len(checkpoints)))
    decision = None
    if ctx.attr.rung:
        decisions = ctx.attr.rung[_RungInfo].decisions
        if trial not in decisions:
            fail("{}: {} decides nothing for trial {}".format(ctx.label, ctx.attr.rung.label, trial))
        decision = decisions[trial]
    training_data = ctx.attr.training_data.files
    test_data = ctx.attr.test_data.files
    train_label = ctx.label.relative(":" + trial)
    eval_label = ctx.label.relative(":" + trial + "__eval")
    hyperparams = dict(ctx.attr.hyperparams)
    for epoch in range(ctx.attr.first_epoch, ctx.attr.last_epoch + 1):
        output = ctx.actions.declare_file(checkpoint_name(model_name, epoch))
        previous_checkpoint = checkpoints[-1] if checkpoints else None
        cards.append(train_step(ctx, train_label, hyperparams, hyperparams_file, training_data, output, epoch, previous_checkpoint, decision, template = ctx.attr.train_args))
        checkpoints.append(output)
    model_info = ModelInfo(
        model_file = checkpoints[-1],
        hyperparams = hyperparams,
        training_data = training_data,
        label = train_label,
        checkpoints = checkpoints,
        card = cards[-1],
        checkpoint_cards = cards,
    )
    for epoch in sorted({k: True for k in ctx.attr.evaluated_epochs + [ctx.attr.last_epoch]}.keys()):
        if epoch < ctx.attr.first_epoch or epoch > ctx.attr.last_epoch:
            fail("{}: cannot evaluate epoch {} in epochs {} to {}".format(ctx.label, epoch, ctx.attr.first_epoch, ctx.attr.last_epoch))
        evaluations[epoch] = evaluate_step(
            ctx,
            eval_label,
            model_info,
            checkpoints[epoch - 1],
            cards[epoch - 1],
            test_data,
            "{}__eval.epoch-{}".format(trial, epoch),
            epoch,
            decision,
            template = ctx.attr.eval_args,
        )
    return [
        DefaultInfo(files = depset([checkpoints[-1]])),
        OutputGroupInfo(cards = depset([cards[-1]])),
        model_info,
        _SegmentInfo(
            trial = trial,
            hyperparams_file = hyperparams_file,
            training_data = training_data,
            test_data = test_data,
            checkpoints = checkpoints,
            cards = cards,
            epoch_evaluations = evaluations,
            early_stopping = struct(rungs = ctx.attr.rungs, bracket = ctx.attr.bracket if ctx.attr.bracket >= 0 else None),
        ),
    ]

early_stopping_segment = rule(
    implementation = _segment_impl,
    doc = "Epochs `first_epoch` to `last_epoch` of one trial of a search with early stopping, gated by `rung`'s decision for it, and their evaluations.",
    attrs = dict(COMMON_ATTRS, **dict(CARD_ATTRS, **{
        "bracket": attr.int(default = -1, doc = "The trial's Hyperband bracket; -1 for successive halving."),
        "eval_executable": script_attr("As in `evaluate`."),
        "eval_args": attr.string_list(doc = "As `args` of `evaluate`, checked by `hyperparam_search`."),
        "evaluated_epochs": attr.int_list(doc = "Epochs of this segment to evaluate besides the last."),
        "first_epoch": attr.int(mandatory = True),
        "hyperparams": attr.string_dict(doc = "The trial's hyperparameters."),
        "ignore_metrics": attr.string_list(doc = "As in `evaluate`."),
        "last_epoch": attr.int(mandatory = True),
        "model_file": attr.string(doc = "As in `model`: the file name of the trial's model. Default: `<trial>.model`."),
        "previous": attr.label(providers = [_SegmentInfo], doc = "The trial's segment ending at `first_epoch` - 1."),
        "rung": attr.label(providers = [_RungInfo], doc = "The rung whose decision gates these epochs."),
        "rungs": attr.int_list(doc = "The epochs of the rungs of the trial's bracket."),
        "test_data": attr.label(mandatory = True, allow_files = True),
        "train_args": attr.string_list(doc = "As `args` of `model`, checked by `hyperparam_search`."),
        "train_executable": script_attr("As in `model`."),
        "training_data": attr.label(mandatory = True, allow_files = True),
        "trial": attr.string(mandatory = True, doc = "The trial's name: its actions are named after it, whatever the segment."),
    })),
    provides = [ModelInfo],
    toolchains = [PY_TOOLCHAIN_TYPE],
)

def _trial_metrics_impl(ctx):
    segment = ctx.attr.trial[_SegmentInfo]
    model = ctx.attr.trial[ModelInfo]
    last = len(segment.checkpoints)
    evaluation = segment.epoch_evaluations[last]
    return evaluation_providers(ctx, evaluation, model, segment.test_data, segment.epoch_evaluations, segment.early_stopping)

early_stopping_metrics = rule(
    implementation = _trial_metrics_impl,
    doc = "The evaluations of a trial of a search with early stopping (no action of its own): what `search_report` ranks.",
    attrs = {
        "trial": attr.label(mandatory = True, providers = [_SegmentInfo, ModelInfo], doc = "The trial's last segment."),
    },
    provides = [MetricsInfo],
)

def _rung_impl(ctx):
    previous = ctx.attr.previous[_RungInfo].decisions if ctx.attr.previous else {}
    decisions = {}
    entries = []
    metrics = []
    for segment in [s[_SegmentInfo] for s in ctx.attr.trials]:
        evaluation = segment.epoch_evaluations.get(ctx.attr.epoch)
        if evaluation == None or len(segment.checkpoints) != ctx.attr.epoch:
            fail("{}: trial {} does not end at epoch {}".format(ctx.label, segment.trial, ctx.attr.epoch))
        if previous and segment.trial not in previous:
            fail("{}: {} decides nothing for trial {}".format(ctx.label, ctx.attr.previous.label, segment.trial))
        decision = ctx.actions.declare_file("{}/{}.decision.json".format(ctx.label.name, segment.trial))
        decisions[segment.trial] = decision
        metrics.append(evaluation.metrics_file)
        entries.append({
            "decision": decision.path,
            "metrics": evaluation.metrics_file.path,
            "name": segment.trial,
            "previous": previous[segment.trial].path if previous else None,
        })
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest.json")
    ctx.actions.write(manifest, json.encode({
        "epoch": ctx.attr.epoch,
        "eta": ctx.attr.eta,
        "metric": ctx.attr.metric,
        "mode": ctx.attr.mode,
        "trials": entries,
    }))
    python = python_runtime(ctx)
    ctx.actions.run(
        executable = python.executable,
        arguments = ["-S", ctx.file._tool.path, "rung", "--target", str(ctx.label), "--manifest", manifest.path],
        inputs = depset([manifest] + metrics + previous.values() + ctx.files._rung_modules, transitive = [python.files]),
        outputs = decisions.values(),
        mnemonic = "DatabazelRung",
        progress_message = "Ranking {} trials of {} at epoch {}".format(len(entries), ctx.label, ctx.attr.epoch),
        use_default_shell_env = False,
        env = DEFAULT_ENV,
    )
    return [
        DefaultInfo(files = depset(decisions.values())),
        _RungInfo(decisions = decisions),
    ]

early_stopping_rung = rule(
    implementation = _rung_impl,
    doc = "A rung of early stopping (successive halving, or a bracket of Hyperband): ranks the trials at epoch `epoch` and writes one decision file per trial (rung.py).",
    attrs = {
        "epoch": attr.int(mandatory = True),
        "eta": attr.int(mandatory = True),
        "metric": attr.string(mandatory = True),
        "mode": attr.string(mandatory = True),
        "previous": attr.label(providers = [_RungInfo], doc = "The bracket's previous rung."),
        "trials": attr.label_list(providers = [_SegmentInfo], doc = "Every trial's segment ending at `epoch`."),
        "_tool": TOOL,
        "_rung_modules": attr.label(default = Label("//databazel/private:rung_modules"), allow_files = True),
    },
    toolchains = [PY_TOOLCHAIN_TYPE],
)

def early_stopping_trials(where, name, trials, early_stopping, metric, mode, learning_curve, model_file, common, **attrs):
    """Declares the segments, rungs and evaluations of a search with early stopping.

    Args:
      where: the search's label, for error messages.
      name: the search's name (rungs are `<name>__rung-I`, or `<name>__bracket-S__rung-I`).
      trials: the expanded trials (struct(name, hyperparams)), in search order.
      early_stopping: a checked `successive_halving(...)` or `hyperband(...)`.
      metric: the metric rungs rank by.
      mode: `max` or `min`.
      learning_curve: evaluate every epoch, not only the rungs'.
      model_file: as in `hyperparam_search`: the model's file name inside a directory named after the trial, or None.
      common: the common attributes (`tags`, `visibility`, `exec_properties`,
        ...) the rungs and the trials' metrics targets get: a rung needs no
        GPU, so without the GPU property the segments' `exec_properties` have.
      **attrs: what every segment gets (scripts, data,
        `timeout`, `allow_failure`, `deps`, ... and the common attributes).

    Returns:
      The labels of the trials' `<trial>__eval` targets, in search order.
    """
    hyperband = kind(early_stopping) == "hyperband"
    evaluations = []
    for bracket in brackets(where, early_stopping, len(trials)):
        members = trials[bracket.start:bracket.start + bracket.size]
        prefix = "{}__bracket-{}".format(name, bracket.index) if hyperband else name
        rung = None
        for i, epoch in enumerate(bracket.rungs):
            first = bracket.rungs[i - 1] + 1 if i else 1
            last = i == len(bracket.rungs) - 1
            for trial in members:
                early_stopping_segment(
                    name = trial.name if last else "{}__rung-{}".format(trial.name, i),
                    trial = trial.name,
                    hyperparams = trial.hyperparams,
                    first_epoch = first,
                    last_epoch = epoch,
                    evaluated_epochs = list(range(first, epoch + 1)) if learning_curve else [],
                    previous = ":{}__rung-{}".format(trial.name, i - 1) if i else None,
                    rung = rung,
                    rungs = bracket.rungs,
                    bracket = bracket.index if hyperband else -1,
                    model_file = trial.name + "/" + model_file if model_file else None,
                    **attrs
                )
            if not last:
                early_stopping_rung(
                    name = "{}__rung-{}".format(prefix, i),
                    trials = [":{}__rung-{}".format(t.name, i) for t in members],
                    previous = rung,
                    epoch = epoch,
                    eta = early_stopping.eta,
                    metric = metric,
                    mode = mode,
                    **common
                )
                rung = ":{}__rung-{}".format(prefix, i)
        for trial in members:
            early_stopping_metrics(name = trial.name + "__eval", trial = ":" + trial.name, **common)
            evaluations.append(":" + trial.name + "__eval")
    return evaluations
