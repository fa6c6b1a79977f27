"""`hyperparam_search`: a grid of `model` and `evaluate` targets and a report that ranks them."""

load(":common.bzl", "DEFAULT_ENV", "PY_TOOLCHAIN_TYPE", "python_runtime")
load(":evaluate.bzl", _evaluate = "evaluate")
load(":grid.bzl", "DEFAULT_MAX_TRIALS", "expand_grid")
load(":model.bzl", _model = "model")
load(":providers.bzl", "MetricsInfo", "SearchReportInfo")

MODES = ("max", "min")

def _search_report_impl(ctx):
    trials = [t[MetricsInfo] for t in ctx.attr.trials]
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest.json")
    ctx.actions.write(manifest, json.encode({
        "hyperparam_names": ctx.attr.hyperparam_names,
        "trials": [
            {
                "hyperparams": t.model.hyperparams,
                "label": str(t.model.label),
                "metrics": t.metrics_file.path,
                "model": t.model.model_file.short_path,
                "name": t.model.label.name,
            }
            for t in trials
        ],
    }))
    outputs = struct(
        json = ctx.actions.declare_file(ctx.label.name + ".json"),
        csv = ctx.actions.declare_file(ctx.label.name + ".csv"),
        markdown = ctx.actions.declare_file(ctx.label.name + ".md"),
    )

    args = ctx.actions.args()
    args.add(ctx.file._report)
    args.add("--target", str(ctx.label))
    args.add("--manifest", manifest)
    args.add("--metric", ctx.attr.metric)
    args.add("--mode", ctx.attr.mode)
    args.add("--json-output", outputs.json)
    args.add("--csv-output", outputs.csv)
    args.add("--markdown-output", outputs.markdown)

    python = python_runtime(ctx)
    ctx.actions.run(
        executable = python.executable,
        arguments = [args],
        inputs = depset(
            [manifest, ctx.file._report, ctx.file._runner] + [t.metrics_file for t in trials],
            transitive = [python.files],
        ),
        outputs = [outputs.json, outputs.csv, outputs.markdown],
        mnemonic = "DatabazelReport",
        progress_message = "Ranking {} trials of {} by {} ({})".format(len(trials), ctx.label, ctx.attr.metric, ctx.attr.mode),
        use_default_shell_env = False,
        env = DEFAULT_ENV,
    )
    files = depset([outputs.json, outputs.csv, outputs.markdown])
    return [
        DefaultInfo(files = files),
        SearchReportInfo(
            json = outputs.json,
            csv = outputs.csv,
            markdown = outputs.markdown,
            metric = ctx.attr.metric,
            mode = ctx.attr.mode,
            trials = trials,
        ),
    ]

search_report = rule(
    implementation = _search_report_impl,
    doc = "Ranks the evaluations of a search by one metric and writes `<name>.json`, `<name>.csv` and `<name>.md`. `hyperparam_search` creates one; use it directly to rank any set of `evaluate` targets.",
    attrs = {
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
        "trials": attr.label_list(
            mandatory = True,
            allow_empty = False,
            providers = [MetricsInfo],
            doc = "The `evaluate` targets to rank.",
        ),
        "_report": attr.label(
            default = Label("//databazel/private:report.py"),
            allow_single_file = True,
        ),
        "_runner": attr.label(
            default = Label("//databazel/private:runner.py"),
            allow_single_file = True,
        ),
    },
    provides = [SearchReportInfo],
    toolchains = [PY_TOOLCHAIN_TYPE],
)

def hyperparam_search(
        name,
        grid = None,
        metric = None,
        training_data = None,
        train_executable = None,
        test_data = None,
        eval_executable = None,
        mode = "max",
        hyperparams = {},
        model = None,
        max_trials = DEFAULT_MAX_TRIALS,
        timeout = 0,
        deps = [],
        data = [],
        env = {},
        **kwargs):
    """Grid search: one `model` and one `evaluate` target per combination, and a report.

    For `grid = {"C": ["0.1", "1"], "max_iter": ["50", "100"]}` and `name = "search"`
    this creates the four model targets `search__C-0.1__max_iter-50`, ..., their
    evaluations `search__C-0.1__max_iter-50__eval`, ..., and the report target
    `search`. Trial names depend only on the trial's own values, so adding a value
    to the grid adds trials and Bazel re-uses the results of the others.

    Every mistake in the declaration fails when the BUILD file is loaded, with a
    message naming the search and the argument to fix.

    Args:
      name: name of the report target; every trial's name starts with it.
      grid: required. Dict from hyperparameter name (an identifier) to a non-empty list of string values.
      metric: required. The metric the report ranks by; every evaluation must produce it.
      training_data: required. As in `model`.
      train_executable: required. As in `model`.
      test_data: required. As in `evaluate`.
      eval_executable: required. As in `evaluate`.
      mode: `max` (larger is better) or `min`.
      hyperparams: hyperparameters every trial gets besides its grid values.
      model: file name of each trial's model, inside a directory named after the trial. Default: `<trial>.model`.
      max_trials: the largest grid allowed (default 1000); a larger one fails at load time.
      timeout: as in `model` and `evaluate`: seconds each training and each evaluation may run (0: no limit).
      deps: as in `model` and `evaluate`; used by both scripts.
      data: as in `model` and `evaluate`; given to both scripts.
      env: as in `model` and `evaluate`; given to both scripts.
      **kwargs: common attributes (`tags`, `visibility`, `testonly`, ...) given to every target.
    """
    where = "//{}:{}".format(native.package_name(), name)
    required = [
        ("grid", grid, "a dict from hyperparameter name to a list of string values"),
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
    if model != None and (type(model) != "string" or not model):
        fail("{}: `model` must be a file name such as \"model.pkl\", got {}".format(where, repr(model)))
    if type(timeout) != "int" or timeout < 0:
        fail("{}: `timeout` must be a number of seconds (an int, 0 for no limit), got {}".format(where, repr(timeout)))
    trials = expand_grid(where, name, grid, hyperparams, max_trials)

    evaluations = []
    for trial in trials:
        _model(
            name = trial.name,
            training_data = training_data,
            train_executable = train_executable,
            hyperparams = trial.hyperparams,
            model = trial.name + "/" + model if model else None,
            timeout = timeout,
            deps = deps,
            data = data,
            env = env,
            **kwargs
        )
        _evaluate(
            name = trial.name + "__eval",
            model = ":" + trial.name,
            test_data = test_data,
            eval_executable = eval_executable,
            timeout = timeout,
            deps = deps,
            data = data,
            env = env,
            **kwargs
        )
        evaluations.append(":" + trial.name + "__eval")

    search_report(
        name = name,
        trials = evaluations,
        hyperparam_names = grid.keys(),
        metric = metric,
        mode = mode,
        **kwargs
    )
