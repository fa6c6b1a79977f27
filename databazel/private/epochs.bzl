"""Trials of a search that differ only in their number of epochs share one chain of epochs.

`hyperparam_search` with an `epochs` grid axis trains, for each combination of
the other values, one `model` with the largest epoch count (the "chain",
`<trial without epochs>__chain`) and evaluates it once (`...__chain__eval`, at
every epoch count of the grid). Each trial is then a view of that chain at its
own epoch: `trial_checkpoint` (the trial's model target) picks a checkpoint,
`trial_evaluation` (the trial's `__eval` target) picks its evaluation. Neither
registers an action, so a grid over epochs [5, 10, 20] trains 20 epochs per
combination, not 35.
"""

load(":evaluate.bzl", "evaluation_providers")
load(":providers.bzl", "MetricsInfo", "ModelInfo")

def _check_epoch(ctx, checkpoints, chain_label):
    if ctx.attr.epoch < 1 or ctx.attr.epoch > len(checkpoints):
        fail("{}: epoch {} is not one of the epochs 1 to {} of {}".format(ctx.label, ctx.attr.epoch, len(checkpoints), chain_label))

def _trial_checkpoint_impl(ctx):
    chain = ctx.attr.model[ModelInfo]
    _check_epoch(ctx, chain.checkpoints, chain.label)
    checkpoint = chain.checkpoints[ctx.attr.epoch - 1]
    return [
        DefaultInfo(files = depset([checkpoint])),
        OutputGroupInfo(cards = depset([chain.checkpoint_cards[ctx.attr.epoch - 1]])),
        ModelInfo(
            model_file = checkpoint,
            hyperparams = dict(ctx.attr.hyperparams),
            training_data = chain.training_data,
            label = ctx.label,
            checkpoints = chain.checkpoints[:ctx.attr.epoch],
            card = chain.checkpoint_cards[ctx.attr.epoch - 1],
            checkpoint_cards = chain.checkpoint_cards[:ctx.attr.epoch],
        ),
    ]

trial_checkpoint = rule(
    implementation = _trial_checkpoint_impl,
    doc = "A trial of a search with an `epochs` axis: the checkpoint of epoch `epoch` of a shared chain of epochs (no action of its own).",
    attrs = {
        "epoch": attr.int(mandatory = True, doc = "The trial's number of epochs: the checkpoint it picks."),
        "hyperparams": attr.string_dict(doc = "The trial's hyperparameters, `epochs` included (for the report)."),
        "model": attr.label(mandatory = True, providers = [ModelInfo], doc = "The chain: a `model` with at least `epoch` epochs."),
    },
    provides = [ModelInfo],
)

def _trial_evaluation_impl(ctx):
    chain = ctx.attr.evaluation[MetricsInfo]
    model = ctx.attr.model[ModelInfo]
    _check_epoch(ctx, chain.model.checkpoints, chain.model.label)
    if ctx.attr.epoch not in chain.epoch_evaluations:
        fail("{}: {} does not evaluate epoch {}".format(ctx.label, chain.label, ctx.attr.epoch))
    evaluation = chain.epoch_evaluations[ctx.attr.epoch]
    evaluations = {k: e for k, e in chain.epoch_evaluations.items() if k <= ctx.attr.epoch}
    return evaluation_providers(ctx, evaluation, model, chain.test_data, evaluations)

trial_evaluation = rule(
    implementation = _trial_evaluation_impl,
    doc = "The evaluation of a `trial_checkpoint`: the evaluation of its epoch in the chain's evaluation (no action of its own).",
    attrs = {
        "epoch": attr.int(mandatory = True, doc = "The trial's number of epochs."),
        "evaluation": attr.label(mandatory = True, providers = [MetricsInfo], doc = "The `evaluate` target of the chain, evaluating `epoch`."),
        "model": attr.label(mandatory = True, providers = [ModelInfo], doc = "The trial's `trial_checkpoint`."),
    },
    provides = [MetricsInfo],
)
