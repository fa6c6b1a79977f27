"""The HTML step of `search_report`: the interactive report, drawn by html_report.py with Optuna and plotly.

Like the PNG plots (plot.bzl), it is an action of its own that only searches
with `plots = True` run, and the only one that gets the packages of
`html_deps`: no trial and no other step has Optuna or plotly among its inputs.
"""

load(":common.bzl", "tool_packages")

def run_html_report(ctx, python, report_json):
    """Registers the action that writes `<name>.html` from the report's JSON.

    Args:
      ctx: the `search_report` context (with the `html_deps`, `_html_report`
        and `_html_report_modules` attributes).
      python: the interpreter, from `python_runtime(ctx)`.
      report_json: the report's JSON file (the trials, ranked).

    Returns:
      The page, `<name>.html`.
    """
    page = ctx.actions.declare_file(ctx.label.name + ".html")
    args = ctx.actions.args()
    args.add(ctx.file._tool)
    args.add("html_report")
    args.add("--target", str(ctx.label))
    args.add("--report", report_json)
    args.add("--output", page)

    # optuna, plotly and their dependencies: the only packages of this action.
    packages = tool_packages(ctx, ctx.attr.html_deps)
    ctx.actions.run(
        executable = python.executable,
        arguments = [args],
        inputs = depset([report_json] + ctx.files._html_report_modules, transitive = [python.files, packages.inputs]),
        outputs = [page],
        mnemonic = "DatabazelHtml",
        progress_message = "Writing the HTML report of {}".format(ctx.label),
        use_default_shell_env = False,
        env = packages.env,
    )
    return page
