"""The plot step of `search_report`: PNG plots drawn by plot.py with matplotlib.

It is a separate action from the report, so the report itself needs only the
standard library: only searches with `plots = True` need matplotlib in the
Python environment.
"""

load(":common.bzl", "tool_packages")

def declare_plots(ctx, hyperparam_names, learning_curve = False):
    """Declares the plot files of a report.

    Args:
      ctx: the `search_report` context.
      hyperparam_names: the searched hyperparameters.
      learning_curve: whether to plot the metric against the epoch too
        (`<name>.plots/learning_curve.png`).

    Returns:
      A list of struct(title, file, kind, names): one plot of the metric
      against each hyperparameter (`<name>.plots/<hp>.png`), and for exactly
      two hyperparameters a plot of the metric over both
      (`<name>.plots/<hp1>__<hp2>.png`: a heatmap for a full grid, a scatter
      plot otherwise).
    """
    metric = ctx.attr.metric
    directory = ctx.label.name + ".plots/"
    plots = [
        struct(
            title = "{} vs {}".format(metric, name),
            file = ctx.actions.declare_file(directory + name + ".png"),
            kind = "single",
            names = [name],
        )
        for name in hyperparam_names
    ]
    if len(hyperparam_names) == 2:
        plots.append(struct(
            title = "{} over {} and {}".format(metric, hyperparam_names[0], hyperparam_names[1]),
            file = ctx.actions.declare_file(directory + "__".join(hyperparam_names) + ".png"),
            kind = "pair",
            names = hyperparam_names,
        ))
    if learning_curve:
        plots.append(struct(
            title = "learning curves: {} vs epoch".format(metric),
            file = ctx.actions.declare_file(directory + "learning_curve.png"),
            kind = "learning-curve",
            names = [],
        ))
    return plots

def run_plot(ctx, python, report_json, plots):
    """Registers the action that draws `plots` from the report's JSON.

    Args:
      ctx: the `search_report` context (with the `_plot` and `_plot_modules` attributes).
      python: the interpreter, from `python_runtime(ctx)`.
      report_json: the report's JSON file (the trials, ranked).
      plots: the structs from `declare_plots`.
    """
    args = ctx.actions.args()
    args.add(ctx.file._tool)
    args.add("plot")
    args.add("--target", str(ctx.label))
    args.add("--report", report_json)
    for plot in plots:
        args.add("--" + plot.kind, ",".join(plot.names) + "=" + plot.file.path if plot.names else plot.file.path)

    # matplotlib and its dependencies: the only packages of this action.
    packages = tool_packages(ctx, ctx.attr.plot_deps)
    ctx.actions.run(
        executable = python.executable,
        arguments = [args],
        inputs = depset([report_json] + ctx.files._plot_modules, transitive = [python.files, packages.inputs]),
        outputs = [p.file for p in plots],
        mnemonic = "DatabazelPlot",
        progress_message = "Plotting {} ({} plots)".format(ctx.label, len(plots)),
        use_default_shell_env = False,
        env = packages.env,
    )
