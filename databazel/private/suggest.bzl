"""Model-based search in rounds (`hyperparam_search(strategy = "tpe")`).

Round 0 is drawn at load time, as random search draws. Every later round r is
one suggestion action (`suggest_round`, mnemonic `DatabazelSuggest`) whose
inputs are the hyperparameters files and metrics files of every trial of
rounds 0 to r - 1 and which writes one hyperparameters file per trial slot of
round r; those trials' `model` targets read their hyperparameters from it
(`hyperparams_file`). The action runs suggest.py (Optuna's TPE sampler) with
the packages of `suggest_deps`. Nothing in round r's action depends on the
number of rounds, so raising `num_rounds` runs only the new rounds.
"""

load(":common.bzl", "PY_TOOLCHAIN_TYPE", "TOOL", "python_runtime", "tool_packages")
load(":providers.bzl", "MetricsInfo")
load(":random.bzl", "encode_space", "expand_random")

# The arguments only a tpe search takes (besides `search_space` and `seed`, which random search shares).
TPE_ARGS = ("num_rounds", "trials_per_round", "suggest_deps")

def _hyperparams_file_of(trial):
    return trial[MetricsInfo].model.hyperparams_file

def _metrics_file_of(trial):
    return trial[MetricsInfo].metrics_file

def _suggest_round_impl(ctx):
    python = python_runtime(ctx)
    trials = ctx.attr.previous
    args = ctx.actions.args()
    args.add(ctx.file._tool)
    args.add("suggest")
    args.add("--target", str(ctx.label))
    args.add("--space", ctx.attr.space)
    args.add("--fixed", json.encode(ctx.attr.fixed_hyperparams))
    args.add("--metric", ctx.attr.metric)
    args.add("--mode", ctx.attr.mode)
    args.add("--seed", str(ctx.attr.seed))
    args.add("--round", str(ctx.attr.round))
    for trial in trials:
        args.add("--trial")
        args.add(_hyperparams_file_of(trial))
        args.add(_metrics_file_of(trial))
    args.add_all(ctx.outputs.outs, before_each = "--output")

    # optuna and its dependencies: the only packages of this action.
    packages = tool_packages(ctx, ctx.attr.deps)
    ctx.actions.run(
        executable = python.executable,
        arguments = [args],
        inputs = depset(
            ctx.files._suggest_modules +
            [_hyperparams_file_of(t) for t in trials] +
            [_metrics_file_of(t) for t in trials],
            transitive = [python.files, packages.inputs],
        ),
        outputs = ctx.outputs.outs,
        mnemonic = "DatabazelSuggest",
        progress_message = "Suggesting round {} of {} ({} trials) from {} earlier trials".format(
            ctx.attr.round,
            ctx.attr.search,
            len(ctx.outputs.outs),
            len(trials),
        ),
        use_default_shell_env = False,
        env = packages.env,
    )
    return [DefaultInfo(files = depset(ctx.outputs.outs))]

suggest_round = rule(
    implementation = _suggest_round_impl,
    doc = "Internal to `hyperparam_search(strategy = \"tpe\")`: the hyperparameters of one round's trials, suggested from the earlier rounds' results.",
    attrs = {
        "deps": attr.label_list(
            providers = [PyInfo],
            doc = "The packages of the suggestion step: optuna (`suggest_deps`).",
        ),
        "fixed_hyperparams": attr.string_dict(doc = "Hyperparameters every trial gets besides the searched ones."),
        "metric": attr.string(mandatory = True),
        "mode": attr.string(mandatory = True, values = ["max", "min"]),
        "outs": attr.output_list(mandatory = True, doc = "One hyperparameters file per trial slot of the round."),
        "previous": attr.label_list(
            providers = [MetricsInfo],
            doc = "The evaluations of every trial of the earlier rounds, in round and slot order.",
        ),
        "round": attr.int(mandatory = True),
        "search": attr.string(doc = "The search's label, for messages."),
        "seed": attr.int(mandatory = True),
        "space": attr.string(mandatory = True, doc = "The search space, as `encode_space` writes it."),
        "_tool": TOOL,
        "_suggest_modules": attr.label(
            default = Label("//databazel/private:suggest_modules"),
            allow_files = True,
        ),
    },
    toolchains = [PY_TOOLCHAIN_TYPE],
)

def _positive_int(where, arg, value, what):
    if value == None:
        fail("{}: a tpe search needs `{}`, {}".format(where, arg, what))
    if type(value) != "int" or value < 1:
        fail("{}: `{}` must be a positive int ({}), got {}".format(where, arg, what, repr(value)))

def round_trial_name(prefix, round, slot):
    """The name of the trial in slot `slot` of round `round` >= 1: `<prefix>__round-<r>__trial-<i>`."""
    return "{}__round-{}__trial-{}".format(prefix, round, slot)

def expand_tpe(where, name, search_space, num_rounds, trials_per_round, seed, fixed_hyperparams, max_trials, metric, mode, suggest_deps, **kwargs):
    """The trials of a tpe search; declares one `suggest_round` target per round after the first.

    Args:
      where: the search's label, for error messages.
      name: the search's name; every trial name starts with it.
      search_space: as for random search.
      num_rounds: the number of rounds R, a positive int.
      trials_per_round: the trials of each round q, a positive int.
      seed: the seed (None: 0).
      fixed_hyperparams: hyperparameters every trial gets.
      max_trials: the most trials allowed.
      metric: the metric the suggestions optimise.
      mode: `max` or `min`.
      suggest_deps: the packages of the suggestion step (optuna).
      **kwargs: common attributes (tags, visibility, ...) for the targets.

    Returns:
      A list of structs with `name`, `hyperparams` (the drawn values for round
      0; only the fixed ones for later rounds), `hyperparams_file` (the label of
      the suggested file, None for round 0) and `round`.
    """
    _positive_int(where, "num_rounds", num_rounds, "the number of rounds, the first one drawn at random")
    _positive_int(where, "trials_per_round", trials_per_round, "the number of trials each round trains in parallel")
    if num_rounds * trials_per_round > max_trials:
        fail("{}: {} rounds of {} trials are {} trials, more than max_trials = {}; raise `max_trials` if you mean it".format(
            where,
            num_rounds,
            trials_per_round,
            num_rounds * trials_per_round,
            max_trials,
        ))
    if type(suggest_deps) != "list" or not suggest_deps:
        fail("{}: a tpe search needs `suggest_deps`, the packages of its suggestion step: [requirement(\"optuna\")] from your Python environment, got {}".format(where, repr(suggest_deps)))
    seed = 0 if seed == None else seed
    trials = [
        struct(name = t.name, hyperparams = t.hyperparams, hyperparams_file = None, round = 0)
        for t in expand_random(where, name, search_space, trials_per_round, seed, fixed_hyperparams, count_attr = "trials_per_round")
    ]
    space = encode_space(search_space)
    for round in range(1, num_rounds):
        names = [round_trial_name(name, round, slot) for slot in range(trials_per_round)]
        suggest = "{}__round-{}__suggest".format(name, round)
        suggest_round(
            name = suggest,
            deps = suggest_deps,
            fixed_hyperparams = fixed_hyperparams,
            metric = metric,
            mode = mode,
            outs = [n + ".hyperparams.json" for n in names],
            previous = [":" + t.name + "__eval" for t in trials],
            round = round,
            search = where,
            seed = seed,
            space = space,
            **kwargs
        )
        trials.extend([
            struct(name = n, hyperparams = {}, hyperparams_file = ":" + n + ".hyperparams.json", round = round)
            for n in names
        ])
    return trials
