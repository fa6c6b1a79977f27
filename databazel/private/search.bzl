"""`hyperparam_search`: grid or random trials as `model` and `evaluate` targets, and a report that ranks them."""

load("@bazel_skylib//lib:paths.bzl", "paths")
load(":card.bzl", "CARD_ATTRS", "best_card")
load(":common.bzl", "DEFAULT_ENV", "PY_TOOLCHAIN_TYPE", "python_runtime", "runfiles_launcher")
load(":early_stopping.bzl", "check_early_stopping", "default_num_trials")
load(":epochs.bzl", "trial_checkpoint", "trial_evaluation")
load(":evaluate.bzl", "check_ignore_metrics", _evaluate = "evaluate")
load(":gpus.bzl", "check_gpus", "gpu_exec_properties")
load(":grid.bzl", "DEFAULT_MAX_TRIALS", "expand_grid", "trial_name")
load(":html_report.bzl", "run_html_report")
load(":mlflow.bzl", "search_mlflow")
load(":model.bzl", _model = "model")
load(":plot.bzl", "declare_plots", "run_plot")
load(":providers.bzl", "MetricsInfo", "SearchReportInfo")
load(":random.bzl", "expand_random")
load(":renamed.bzl", "renamed")
load(":rungs.bzl", "early_stopping_trials")
load(":suggest.bzl", "TPE_ARGS", "expand_tpe")
load(":templates.bzl", "HYPERPARAM_PREFIX", "check_eval_template", "check_train_template")

MODES = ("max", "min")

def _best_model_name(ctx, trials):
    """`<name>.best.<ext>`, with the extension the trials' model files share (else `model`)."""
    extensions = {t.model.model_file.extension: True for t in trials}
    extension = extensions.keys()[0] if len(extensions) == 1 and extensions.keys()[0] else "model"
    return "{}.best.{}".format(ctx.label.name, extension)

def _early_stopping_json(metrics_info):
    """The rungs and bracket of a trial of a search with early stopping, or None."""
    es = getattr(metrics_info, "early_stopping", None)
    return {"bracket": es.bracket, "rungs": es.rungs} if es else None

def _hyperparams_path(model):
    """The path of the hyperparameters file a trial's script was given, or None (a checkpoint of a chain)."""
    hyperparams_file = getattr(model, "hyperparams_file", None)
    return hyperparams_file.path if hyperparams_file else None

def _search_report_impl(ctx):
    trials = [t[MetricsInfo] for t in ctx.attr.trials]
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest.json")
    ctx.actions.write(manifest, json.encode({
        "hyperparam_names": ctx.attr.hyperparam_names,
        "trials": [
            {
                "hyperparams": t.model.hyperparams,
                "hyperparams_file": _hyperparams_path(t.model),
                "label": str(t.model.label),
                "metrics": t.metrics_file.path,
                "model": t.model.model_file.short_path,
                "model_path": t.model.model_file.path,
                "name": t.model.label.name,
                "learning_curve": [
                    {"epoch": epoch, "metrics": e.metrics_file.path}
                    for epoch, e in sorted(t.epoch_evaluations.items())
                ],
                "early_stopping": _early_stopping_json(t),
                "round": ctx.attr.trial_rounds[i] if ctx.attr.trial_rounds else None,
            }
            for i, t in enumerate(trials)
        ],
    }))
    if ctx.attr.trial_rounds and len(ctx.attr.trial_rounds) != len(trials):
        fail("{}: `trial_rounds` has {} entries for {} trials".format(ctx.label, len(ctx.attr.trial_rounds), len(trials)))
    outputs = struct(
        json = ctx.actions.declare_file(ctx.label.name + ".json"),
        csv = ctx.actions.declare_file(ctx.label.name + ".csv"),
        markdown = ctx.actions.declare_file(ctx.label.name + ".md"),
        leaderboard = ctx.actions.declare_file(ctx.label.name + ".txt"),
        best_model = ctx.actions.declare_file(_best_model_name(ctx, trials)),
        best_hyperparams = ctx.actions.declare_file(ctx.label.name + ".best_hyperparams.json"),
    )
    curves = [e.metrics_file for t in trials for e in t.epoch_evaluations.values()]
    has_curve = [t for t in trials if len(t.epoch_evaluations) > 1]
    plots = declare_plots(ctx, ctx.attr.hyperparam_names, learning_curve = bool(has_curve)) if ctx.attr.plots else []

    args = ctx.actions.args()
    args.add(ctx.file._tool)
    args.add("report")
    args.add("--target", str(ctx.label))
    args.add("--manifest", manifest)
    args.add("--metric", ctx.attr.metric)
    args.add("--mode", ctx.attr.mode)
    args.add("--json-output", outputs.json)
    args.add("--csv-output", outputs.csv)
    args.add("--markdown-output", outputs.markdown)
    args.add("--leaderboard-output", outputs.leaderboard)
    args.add("--best-model-output", outputs.best_model)
    args.add("--best-hyperparams-output", outputs.best_hyperparams)
    for plot in plots:
        args.add("--plot", "{}={}".format(plot.title, paths.relativize(plot.file.short_path, paths.dirname(outputs.markdown.short_path))))

    python = python_runtime(ctx)
    report_outputs = [outputs.json, outputs.csv, outputs.markdown, outputs.leaderboard, outputs.best_model, outputs.best_hyperparams]
    ctx.actions.run(
        executable = python.executable,
        arguments = [args],
        inputs = depset(
            [manifest] + ctx.files._report_modules + [t.metrics_file for t in trials] + [t.model.model_file for t in trials],
            transitive = [python.files, depset(curves), depset([f for f in [getattr(t.model, "hyperparams_file", None) for t in trials] if f])],
        ),
        outputs = report_outputs,
        mnemonic = "DatabazelReport",
        progress_message = "Ranking {} trials of {} by {} ({})".format(len(trials), ctx.label, ctx.attr.metric, ctx.attr.mode),
        use_default_shell_env = False,
        env = DEFAULT_ENV,
    )
    html = None
    if plots:
        run_plot(ctx, python, outputs.json, plots)
    if ctx.attr.plots:
        html = run_html_report(ctx, python, outputs.json)

    # `bazel run` on the report target prints the leaderboard, or with
    # `--against OTHER.json` what changed against another build's report.
    launcher = runfiles_launcher(
        ctx,
        ctx.label.name + ".leaderboard.sh",
        python,
        [
            ctx.file._tool.short_path,
            "leaderboard",
            "--target",
            str(ctx.label),
            "--report",
            outputs.json.short_path,
            "--leaderboard",
            outputs.leaderboard.short_path,
        ],
        "Prints the leaderboard of {}; with --against OTHER.json, what changed against another build's report.".format(ctx.label),
    )
    card = best_card(ctx, outputs.json, outputs.best_model, trials)
    files = depset(report_outputs + [p.file for p in plots] + ([html] if html else []))
    return [
        DefaultInfo(
            files = files,
            executable = launcher,
            runfiles = ctx.runfiles(
                files = [outputs.leaderboard, outputs.json] + ctx.files._leaderboard_modules,
                transitive_files = python.files,
            ),
        ),
        OutputGroupInfo(
            cards = depset([card]),
            html = depset([html] if html else []),
        ),
        SearchReportInfo(
            json = outputs.json,
            csv = outputs.csv,
            markdown = outputs.markdown,
            leaderboard = outputs.leaderboard,
            best_model = outputs.best_model,
            best_hyperparams = outputs.best_hyperparams,
            best_card = card,
            plots = [p.file for p in plots],
            html = html,
            metric = ctx.attr.metric,
            mode = ctx.attr.mode,
            trials = trials,
        ),
    ]

search_report = rule(
    implementation = _search_report_impl,
    doc = """Ranks the evaluations of a search by one metric.

Writes the report `<name>.json`, `<name>.csv`, `<name>.md` and `<name>.txt`
(the leaderboard as a text table, which `bazel run` on this target prints;
`bazel run` on it `-- --against OTHER.json` prints what changed against
another build's report), the best trial's model `<name>.best.<ext>` (a
byte-identical copy) and its hyperparameters `<name>.best_hyperparams.json`,
and with `plots = True` PNG plots in `<name>.plots/` and the interactive HTML
report `<name>.html`. The Markdown report, the leaderboard and the HTML
report print metrics to 4 significant digits (values of a column that differ
only beyond them get the digits that tell them apart, marked `*`); the JSON
and CSV reports keep every digit. Trials whose failure was recorded (`allow_failure`)
are ranked last and can't be the best; if every trial failed, the build fails.
`hyperparam_search` creates one; use it directly to rank any set of `evaluate`
targets. Trials whose evaluation covers several epochs (`evaluate(learning_curve = True)`)
get their `learning_curve` (the metrics of each evaluated epoch) in the JSON report.
Output group `cards` has the lineage card of the best model, `<name>.best.card.json`;
output group `html` the HTML report alone (`bazel build //pkg:search --output_groups=html`).""",
    attrs = dict(CARD_ATTRS, **{
        "hyperparam_names": attr.string_list(
            doc = "Order of the hyperparameter columns in the CSV and Markdown leaderboards.",
        ),
        "metric": attr.string(
            mandatory = True,
            doc = "The metric (a key of every trial's metrics) trials are ranked by.",
        ),
        "mode": attr.string(
            default = "max",
            values = list(MODES),
            doc = "`max` if a larger metric is better, `min` if a smaller one is.",
        ),
        "html_deps": attr.label_list(
            providers = [PyInfo],
            doc = "The packages the HTML report step imports: optuna and plotly, for example `[requirement(\"optuna\"), requirement(\"plotly\")]` (with their dependencies). Only the HTML action gets them.",
        ),
        "plots": attr.bool(
            default = False,
            doc = "Draw PNG plots with matplotlib (the metric against each of `hyperparam_names`, a heatmap or scatter plot of the metric over two hyperparameters when there are exactly two, and the learning curves, the metric against the epoch, when trials evaluated several epochs) into `<name>.plots/`, embedded in the Markdown report, and write the interactive HTML report `<name>.html`: one self-contained page (it opens offline) with the leaderboard and Optuna's plots (optimization history, parallel coordinates, hyperparameter importance, slices, contours and, for trials evaluated every epoch, the learning curves), drawn with plotly. Needs matplotlib in `plot_deps` and optuna and plotly in `html_deps`.",
        ),
        "plot_deps": attr.label_list(
            providers = [PyInfo],
            doc = "The packages the plot step imports: matplotlib, for example `[\"@<env>//:matplotlib\"]` (with its dependencies). Only the plot action gets them; the report itself needs no package.",
        ),
        "trials": attr.label_list(
            mandatory = True,
            allow_empty = False,
            providers = [MetricsInfo],
            doc = "The `evaluate` targets to rank.",
        ),
        "trial_rounds": attr.int_list(
            doc = "The round of each of `trials` (same order) in a search in rounds (`strategy = \"tpe\"`): the report gets a `round` column. Empty: no rounds.",
        ),
        "_html_report_modules": attr.label(
            default = Label("//databazel/private:html_report_modules"),
            allow_files = True,
        ),
        "_leaderboard_modules": attr.label(
            default = Label("//databazel/private:leaderboard_modules"),
            allow_files = True,
        ),
        "_plot_modules": attr.label(
            default = Label("//databazel/private:plot_modules"),
            allow_files = True,
        ),
        "_report_modules": attr.label(
            default = Label("//databazel/private:report_modules"),
            allow_files = True,
        ),
    }),
    provides = [SearchReportInfo],
    toolchains = [PY_TOOLCHAIN_TYPE],
    executable = True,
)

def _search_best_impl(ctx):
    report = ctx.attr.search[SearchReportInfo]
    return [
        DefaultInfo(
            files = depset([report.best_model]),
            runfiles = ctx.runfiles(files = [report.best_model]),
        ),
        OutputGroupInfo(cards = depset([report.best_card])),
    ]

search_best = rule(
    implementation = _search_best_impl,
    doc = """The best model of a search as an ordinary dependency.

Its default output (and runfiles) is the search's `<search>.best.<ext>`, so a
`py_binary` can list it in `data` and find it at `$(rootpath ...)`;
`hyperparam_search(name = "s", ...)` creates one, `s.best`. Output group
`cards` has its lineage card. When another trial wins, the file's content
changes and everything depending on it rebuilds; its name does not.""",
    attrs = {
        "search": attr.label(
            mandatory = True,
            providers = [SearchReportInfo],
            doc = "The `hyperparam_search` (or `search_report`) target whose best model this is.",
        ),
    },
)

STRATEGIES = ("grid", "random", "tpe")

def _expand_trials(where, name, strategy, grid, search_space, num_trials, seed, hyperparams, max_trials, tpe, tpe_targets):
    """The trials of a search, by strategy; fails naming `where` on arguments of the other strategy."""
    if strategy not in STRATEGIES:
        fail("{}: `strategy` must be \"grid\", \"random\" or \"tpe\", got {}".format(where, repr(strategy)))
    if strategy != "tpe":
        for arg in TPE_ARGS:
            if tpe[arg] != None:
                fail("{}: `{}` is for strategy = \"tpe\" (a model-based search in rounds)".format(where, arg))
    if strategy == "grid":
        for arg, value in (("search_space", search_space), ("num_trials", num_trials), ("seed", seed)):
            if value != None:
                fail("{}: `{}` is for strategy = \"random\"; a grid search takes `grid`".format(where, arg))
        if grid == None:
            fail("{}: `grid` is required: a dict from hyperparameter name to a list of string values".format(where))
        return expand_grid(where, name, grid, hyperparams, max_trials)
    if grid != None:
        fail("{}: a {} search takes `search_space`, not `grid`".format(where, strategy))
    if strategy == "tpe":
        if num_trials != None:
            fail("{}: `num_trials` is for strategy = \"random\"; a tpe search runs `num_rounds` rounds of `trials_per_round` trials".format(where))
        return expand_tpe(where, name, search_space, seed = seed, fixed_hyperparams = hyperparams, max_trials = max_trials, **dict(tpe, **tpe_targets))
    if num_trials == None:
        fail("{}: a random search needs `num_trials`, the number of trials to draw".format(where))
    if type(num_trials) == "int" and num_trials > max_trials:
        fail("{}: `num_trials` = {} is more than max_trials = {}; raise `max_trials` if you mean it".format(where, num_trials, max_trials))
    return expand_random(where, name, search_space, num_trials, 0 if seed == None else seed, hyperparams)

def hyperparam_search(
        name,
        metric = None,
        training_data = None,
        train_executable = None,
        test_data = None,
        eval_executable = None,
        grid = None,
        strategy = "grid",
        search_space = None,
        num_trials = None,
        seed = None,
        num_rounds = None,
        trials_per_round = None,
        suggest_deps = None,
        mode = "max",
        hyperparams = {},
        model_file = None,
        max_trials = DEFAULT_MAX_TRIALS,
        timeout = 0,
        allow_failure = None,
        plots = False,
        plot_deps = [],
        html_deps = [],
        mlflow_deps = [],
        epochs = None,
        learning_curve = False,
        early_stopping = None,
        deps = [],
        data = [],
        env = {},
        model = None,
        network = False,
        gpus = 0,
        train_args = None,
        eval_args = None,
        ignore_metrics = [],
        allow_failed_trials = None,
        **kwargs):
    """A hyperparameter search: one `model` and one `evaluate` target per trial, a report, and its best model.

    Grid search (the default): for `grid = {"C": ["0.1", "1"], "max_iter": ["50", "100"]}`
    and `name = "search"` this creates the four model targets
    `search__C-0.1__max_iter-50`, ..., their evaluations
    `search__C-0.1__max_iter-50__eval`, ..., the report target `search`, and
    `search.best`, whose output is the best trial's model (`search.best.<ext>`),
    to depend on it like on any file (`data = [":search.best"]`), and
    `search.mlflow`, which `bazel run` to log the search to MLflow (see
    `mlflow_deps`). `bazel run //pkg:search` prints the leaderboard, and
    `bazel run //pkg:search -- --against OTHER.json` what changed against
    another build's report.

    Random search: `strategy = "random"`, `num_trials = N`, `seed = S` and a
    `search_space` whose entries are lists of string values or `uniform(low, high)`,
    `loguniform(low, high)`, `randint(low, high)`. The N trials are drawn at load
    time, deterministically: the same seed gives the same trials everywhere, and
    growing `num_trials` keeps the earlier trials.

    Model-based search: `strategy = "tpe"`, `num_rounds = R`, `trials_per_round = q`,
    `seed = S`, `suggest_deps = [requirement("optuna")]` and a `search_space` as for
    random search. Round 0 is the first q trials random search would draw; each
    later round is one cached action that feeds every earlier trial's
    hyperparameters and metric (or failure) to Optuna's TPE sampler and writes one
    hyperparameters file per trial of the round (docs/searches.md).

    Trial names depend only on the trial's own values, so adding grid values or
    random trials adds targets and Bazel re-uses the results of the others.

    Every mistake in the declaration fails when the BUILD file is loaded, with a
    message naming the search and the argument to fix.

    Args:
      name: name of the report target; every trial's name starts with it.
      metric: required. The metric the report ranks by; every evaluation must produce it.
      training_data: required. As in `model`.
      train_executable: required. As in `model`.
      test_data: required. As in `evaluate`.
      eval_executable: required. As in `evaluate`.
      grid: required for the grid strategy: dict from hyperparameter name (an identifier) to a non-empty list of string values.
      strategy: `grid` (every combination of `grid`), `random` (`num_trials` draws from `search_space`) or `tpe` (`num_rounds` rounds of `trials_per_round` trials over `search_space`, suggested by Optuna's TPE sampler from the earlier rounds' results).
      search_space: for the random and tpe strategies: dict from hyperparameter name to a list of string values (one is drawn) or `uniform(low, high)`, `loguniform(low, high)`, `randint(low, high)`.
      num_trials: for the random strategy: how many distinct trials to draw.
      seed: for the random and tpe strategies: an int (default 0); the same seed gives the same trials.
      num_rounds: for the tpe strategy: the number of rounds, a positive int. Round 0 is drawn as random search draws; each later round is suggested from the results of all earlier ones. Raising it runs only the new rounds.
      trials_per_round: for the tpe strategy: the trials of each round, trained in parallel: `<name>__round-<r>__trial-<i>` for rounds r >= 1.
      suggest_deps: for the tpe strategy, required: the packages of the suggestion step, `[requirement("optuna")]` (with its dependencies). Only the suggestion actions get them.
      mode: `max` (larger is better) or `min`.
      hyperparams: hyperparameters every trial gets besides its searched values.
      model_file: file name of each trial's model, inside a directory named after the trial, such as `model.pkl`. Default: `<trial>.model`.
      max_trials: the most trials allowed (default 1000): a larger grid or `num_trials` fails at load time.
      timeout: as in `model` and `evaluate`: seconds each training and each evaluation may run (0: no limit).
      allow_failure: as in `model` and `evaluate`: record a failing trial (its exit code and stderr tail) in the report, ranked last, instead of failing the build.
      plots: draw PNG plots of the metric against the hyperparameters with matplotlib, which `plot_deps` must then provide, and write the interactive HTML report `<name>.html` with Optuna and plotly, which `html_deps` must provide.
      plot_deps: as in `search_report`: the packages of the plot step, such as `["@<env>//:matplotlib"]`.
      html_deps: as in `search_report`: the packages of the HTML report step, `[requirement("optuna"), requirement("plotly")]`.
      mlflow_deps: the packages of `<name>.mlflow` (a `search_mlflow` target: `bazel run //pkg:<name>.mlflow -- --tracking-uri URI` logs the search to MLflow): MLflow's client, such as `["@databazel_mlflow//:mlflow-skinny"]`, best from a Python environment of its own. Only that target gets them.
      epochs: train every trial in this many epochs (see `model`). To search over the number of epochs instead, make `epochs` a key of `grid` (or `search_space`) with positive integer strings: trials that differ only in it share one chain of epochs (`<trial without epochs>__chain`, evaluated by `...__chain__eval`), so epochs ["5", "10", "20"] train 20 epochs per combination of the other values, not 35. The script never gets `epochs` in `--hyperparams`, only `--epoch K`.
      learning_curve: evaluate every epoch's checkpoint: the report's JSON gets each trial's `learning_curve` and, with `plots`, a plot of the metric against the epoch. Needs `epochs` or `early_stopping`.
      early_stopping: `successive_halving(max_epochs = N, min_epochs = M, eta = E)` or `hyperband(...)`: train the trials in epochs and stop the worse ones early, at rungs (see docs/early-stopping.md). Not with `epochs`. A random search with `hyperband` and no `num_trials` draws the trials Hyperband asks for.
      deps: as in `model` and `evaluate`; used by both scripts.
      data: as in `model` and `evaluate`; given to both scripts.
      env: as in `model` and `evaluate`; given to both scripts.
      model: deprecated: the old name of `model_file`, accepted until databazel 0.2.0 with a message.
      network: as in `model` and `evaluate`: let both scripts open network connections (off by default).
      gpus: as in `model` and `evaluate`: GPUs each training and evaluation holds while it runs (Ray Tune's `resources_per_trial={"gpu": N}`). Their targets also get `exec_properties` `{"gpu": "N"}` (merged with yours), so that a remote execution engine can send them to GPU workers.
      train_args: the training script's command line, as `args` of `model`: a list of templates, such as `["--lr={hp.lr}", "--batch-size={hp.batch_size}", "--out={model_output_path}", "{data}"]`. Every searched hyperparameter must reach the script, through `{hyperparams}` or its `{hp.NAME}`; with `epochs` or `early_stopping`, `{epoch}` and `{init_model_path}` are required. Checked when the BUILD file is loaded. None or empty: the fixed command line.
      eval_args: the evaluation script's command line, as `args` of `evaluate`, such as `["--model-path", "{model_path}", "--output-file", "{metrics_file}"]`. None or empty: the fixed command line.
      ignore_metrics: as in `evaluate`: entries of the evaluation script's metrics file that are not metrics, left out of the trials' metrics and the report. Not `metric`.
      allow_failed_trials: deprecated: the old name of `allow_failure`, accepted until databazel 0.2.0 with a message.
      **kwargs: common attributes (`tags`, `visibility`, `testonly`, `exec_properties`
        for remote execution, ...) given to every target.
    """
    where = "//{}:{}".format(native.package_name(), name)
    _check_search(where, metric, training_data, train_executable, test_data, eval_executable, mode, max_trials, timeout)
    model_file = renamed(where, "model", model, "model_file", model_file)
    allow_failure = renamed(where, "allow_failed_trials", allow_failed_trials, "allow_failure", allow_failure) or False
    if model_file != None and (type(model_file) != "string" or not model_file):
        fail("{}: `model_file` must be a file name such as \"model.pkl\", got {}".format(where, repr(model_file)))
    if early_stopping != None:
        check_early_stopping(where, early_stopping)
        if strategy == "random" and num_trials == None:
            num_trials = default_num_trials(early_stopping)
    if strategy == "tpe" and early_stopping != None:
        fail("{}: a tpe search can't stop trials early (`early_stopping`): its rounds already spend the trials where the results point".format(where))
    tpe = dict(num_rounds = num_rounds, trials_per_round = trials_per_round, suggest_deps = suggest_deps)
    trials = _expand_trials(where, name, strategy, grid, search_space, num_trials, seed, hyperparams, max_trials, tpe, dict(metric = metric, mode = mode, **kwargs))
    hyperparam_names = (grid if strategy == "grid" else search_space).keys()
    epoch_axis = EPOCHS in hyperparam_names
    if epoch_axis and strategy == "tpe":
        fail("{}: a tpe search can't search over `epochs` (trials share epochs only when their values are known at load time); give every trial `epochs = N`".format(where))
    _check_epochs(where, hyperparams, epochs, epoch_axis, learning_curve, early_stopping)
    _check_script_templates(
        where,
        train_args,
        eval_args,
        ignore_metrics,
        metric,
        searched = [n for n in hyperparam_names if n != EPOCHS],
        fixed = hyperparams.keys() if type(hyperparams) == "dict" else [],
        epochs = epochs != None or epoch_axis or early_stopping != None,
    )
    script_attrs = dict(
        training_data = training_data,
        train_executable = train_executable,
        test_data = test_data,
        eval_executable = eval_executable,
        timeout = timeout,
        allow_failure = allow_failure,
        deps = deps,
        data = data,
        env = env,
        network = network,
        gpus = gpus,
        train_args = train_args or [],
        eval_args = eval_args or [],
        ignore_metrics = ignore_metrics,
    )
    check_gpus(where, gpus)
    trial_kwargs = dict(kwargs, exec_properties = gpu_exec_properties(gpus, kwargs.get("exec_properties"))) if gpus else kwargs
    outputs = struct(plots = plots, plot_deps = plot_deps, html_deps = html_deps, mlflow_deps = mlflow_deps)
    if early_stopping != None:
        _report_and_best(
            name,
            early_stopping_trials(where, name, trials, early_stopping, metric, mode, learning_curve, model_file = model_file, common = kwargs, **dict(script_attrs, **trial_kwargs)),
            hyperparam_names,
            metric,
            mode,
            outputs,
            **kwargs
        )
        return

    # What is trained: each trial, or each chain of epochs its trials share.
    chains = _epoch_chains(where, name, hyperparam_names, trials) if epoch_axis else {}
    if epoch_axis:
        runs = [struct(name = c.name, hyperparams = c.hyperparams, epochs = max(c.epochs), evaluated_epochs = sorted(c.epochs)) for c in chains.values()]
    else:
        runs = [struct(name = t.name, hyperparams = t.hyperparams, hyperparams_file = getattr(t, "hyperparams_file", None), epochs = epochs or 0, evaluated_epochs = []) for t in trials]
    for run in runs:
        _train_and_evaluate(
            run,
            model_file = model_file,
            learning_curve = learning_curve,
            **dict(script_attrs, **trial_kwargs)
        )
    if epoch_axis:
        for trial in trials:
            _checkpoint_trial(trial, chains[trial.chain].name, **kwargs)
    _report_and_best(name, [":" + t.name + "__eval" for t in trials], hyperparam_names, metric, mode, outputs, trial_rounds = [t.round for t in trials] if strategy == "tpe" else [], **kwargs)

def _report_and_best(name, evaluations, hyperparam_names, metric, mode, outputs, trial_rounds = [], **kwargs):
    """The search's report target `name`, `<name>.best` and `<name>.mlflow`.

    `outputs` is struct(plots, plot_deps, html_deps, mlflow_deps).
    """
    search_report(
        name = name,
        trials = evaluations,
        trial_rounds = trial_rounds,
        hyperparam_names = hyperparam_names,
        metric = metric,
        mode = mode,
        plots = outputs.plots,
        plot_deps = outputs.plot_deps,
        html_deps = outputs.html_deps,
        **kwargs
    )
    search_best(
        name = name + ".best",
        search = ":" + name,
        **kwargs
    )

    # Built only by name (`bazel run`), so that `bazel build //...` fetches no MLflow.
    search_mlflow(
        name = name + ".mlflow",
        search = ":" + name,
        deps = outputs.mlflow_deps,
        **dict(kwargs, tags = list(kwargs.get("tags", [])) + ["manual"])
    )

def _check_search(where, metric, training_data, train_executable, test_data, eval_executable, mode, max_trials, timeout):
    """Fails naming `where` unless the search's required and scalar arguments are valid."""
    required = [
        ("metric", metric, "the metric to rank by, such as \"accuracy\""),
        ("training_data", training_data, "the label of the training data"),
        ("train_executable", train_executable, "the training script"),
        ("test_data", test_data, "the label of the evaluation data"),
        ("eval_executable", eval_executable, "the evaluation script"),
    ]
    for arg, value, what in required:
        if value == None:
            fail("{}: `{}` is required: {}".format(where, arg, what))
    if type(metric) != "string" or not metric:
        fail("{}: `metric` must name the metric to rank by, such as \"accuracy\", got {}".format(where, repr(metric)))
    if mode not in MODES:
        fail("{}: `mode` must be \"max\" or \"min\", got {}".format(where, repr(mode)))
    if type(max_trials) != "int" or max_trials < 1:
        fail("{}: `max_trials` must be a positive int, got {}".format(where, repr(max_trials)))
    if type(timeout) != "int" or timeout < 0:
        fail("{}: `timeout` must be a number of seconds (an int, 0 for no limit), got {}".format(where, repr(timeout)))

def _check_epochs(where, hyperparams, epochs, epoch_axis, learning_curve, early_stopping):
    """Fails naming `where` unless `epochs` (an argument or a searched axis), `learning_curve` and `early_stopping` agree."""
    if type(hyperparams) == "dict" and EPOCHS in hyperparams:
        fail("{}: `epochs` is not a hyperparameter: write `epochs = N` (every trial), or make it a grid axis".format(where))
    if epochs != None and (type(epochs) != "int" or epochs < 1):
        fail("{}: `epochs` must be a positive int, got {}".format(where, repr(epochs)))
    if epochs != None and epoch_axis:
        fail("{}: `epochs` is both an argument and a searched hyperparameter; keep one of them".format(where))
    if early_stopping != None and (epochs != None or epoch_axis):
        fail("{}: with `early_stopping` the trials train up to its `max_epochs`; remove `epochs` (argument or searched hyperparameter)".format(where))
    if learning_curve and epochs == None and not epoch_axis and early_stopping == None:
        fail("{}: `learning_curve` evaluates every epoch, so it needs `epochs` (or an `epochs` grid axis, or `early_stopping`)".format(where))

def _check_script_templates(where, train_args, eval_args, ignore_metrics, metric, searched, fixed, epochs):
    """Fails naming `where` unless `train_args`, `eval_args` and `ignore_metrics` are valid for the search's trials.

    Args:
      where: the search's label.
      train_args: the training template; None or empty: the fixed command line.
      eval_args: the evaluation template; None or empty: the fixed command line.
      ignore_metrics: the entries of the metrics file that are not metrics.
      metric: the metric the report ranks by.
      searched: the searched hyperparameters the script gets (not `epochs`).
      fixed: the hyperparameters every trial gets besides them.
      epochs: whether the trials train in epochs.
    """
    if train_args:
        placeholders = check_train_template(where, "train_args", train_args, searched + [k for k in fixed if k not in searched], epochs)
        if "hyperparams" not in placeholders:
            for name in searched:
                if HYPERPARAM_PREFIX + name not in placeholders:
                    fail("{}: `train_args` gives the script neither `{{hyperparams}}` nor `{{{}}}`, so the trials would differ in their names only; add an argument such as \"--{}={{{}}}\"".format(
                        where,
                        HYPERPARAM_PREFIX + name,
                        name.replace("_", "-"),
                        HYPERPARAM_PREFIX + name,
                    ))
    check_eval_template(where, "eval_args", eval_args or [])
    check_ignore_metrics(where, ignore_metrics)
    if metric in ignore_metrics:
        fail("{}: `ignore_metrics` lists {}, the `metric` the report ranks by".format(where, json.encode(metric)))

def _train_and_evaluate(run, training_data, train_executable, model_file, test_data, eval_executable, learning_curve, train_args, eval_args, ignore_metrics, **attrs):
    """The `model` target `run.name` and its `evaluate` target `<run.name>__eval`.

    Args:
      run: struct(name, hyperparams, epochs, evaluated_epochs, optional hyperparams_file): a trial, or a chain of epochs.
      training_data: as in `model`.
      train_executable: as in `model`.
      model_file: the model's file name (inside a directory named after the run), or None.
      test_data: as in `evaluate`.
      eval_executable: as in `evaluate`.
      learning_curve: as in `evaluate`.
      train_args: the model's `args`.
      eval_args: the evaluation's `args`.
      ignore_metrics: as in `evaluate`.
      **attrs: what both targets get: `timeout`, `allow_failure`, `deps`, `data`, `env`, `network`, `gpus` and the common attributes.
    """
    _model(
        name = run.name,
        training_data = training_data,
        train_executable = train_executable,
        hyperparams = run.hyperparams,
        hyperparams_file = getattr(run, "hyperparams_file", None),
        model_file = run.name + "/" + model_file if model_file else None,
        epochs = run.epochs,
        args = train_args,
        **attrs
    )
    _evaluate(
        name = run.name + "__eval",
        model = ":" + run.name,
        test_data = test_data,
        eval_executable = eval_executable,
        learning_curve = learning_curve,
        evaluated_epochs = run.evaluated_epochs,
        args = eval_args,
        ignore_metrics = ignore_metrics,
        **attrs
    )

def _checkpoint_trial(trial, chain, **kwargs):
    """A trial of an `epochs` axis: its checkpoint of chain `chain` and that checkpoint's evaluation."""
    trial_checkpoint(
        name = trial.name,
        model = ":" + chain,
        epoch = trial.epochs,
        hyperparams = trial.hyperparams,
        **kwargs
    )
    trial_evaluation(
        name = trial.name + "__eval",
        evaluation = ":" + chain + "__eval",
        model = ":" + trial.name,
        epoch = trial.epochs,
        **kwargs
    )

# The searched hyperparameter that is the number of epochs.
EPOCHS = "epochs"

def _epoch_chains(where, prefix, hyperparam_names, trials):
    """Groups trials that differ only in their number of epochs into shared chains.

    Args:
      where: the search's label, for error messages.
      prefix: the search's name.
      hyperparam_names: the searched hyperparameters, `epochs` among them.
      trials: the expanded trials (each with an `epochs` hyperparameter); each
        gets `chain` (its chain's name) and `epochs` (an int) added.

    Returns:
      dict from chain name to struct(name, hyperparams without `epochs`, epochs: list of ints).
    """
    chains = {}
    for i, trial in enumerate(trials):
        value = trial.hyperparams[EPOCHS]
        if not value.isdigit() or int(value) < 1:
            fail("{}: {} must be positive integers (a number of epochs), got {}".format(where, EPOCHS, repr(value)))
        others = {k: v for k, v in trial.hyperparams.items() if k != EPOCHS}

        # Named like a trial without `epochs`, plus `__chain`: a trial name's
        # last piece has a `-` or is a hash, so the two never meet.
        chain = trial_name(prefix, [(k, others[k]) for k in hyperparam_names if k != EPOCHS]) + "__chain"
        if chain not in chains:
            chains[chain] = struct(name = chain, hyperparams = others, epochs = [])
        chains[chain].epochs.append(int(value))
        trials[i] = struct(name = trial.name, hyperparams = trial.hyperparams, chain = chain, epochs = int(value))
    return chains
