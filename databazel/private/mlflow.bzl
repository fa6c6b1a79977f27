"""`search_mlflow`: `bazel run` logs a search to an MLflow tracking store (mlflow_export.py)."""

load(":common.bzl", "PY_TOOLCHAIN_TYPE", "TOOL", "dependencies", "python_runtime", "runfiles_launcher")
load(":providers.bzl", "SearchReportInfo")

def _search_mlflow_impl(ctx):
    report = ctx.attr.search[SearchReportInfo]
    python = python_runtime(ctx)
    packages = dependencies(ctx, ctx.attr.deps, [])

    # The files the export reads, by their paths in the runfiles.
    cards = {str(t.model.label): t.card for t in report.trials}
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest.json")
    ctx.actions.write(manifest, json.encode({
        "search": str(ctx.attr.search.label),
        "report": report.json.short_path,
        "best_card": report.best_card.short_path,
        "html": report.html.short_path if report.html else None,
        "cards": {label: card.short_path for label, card in cards.items()},
    }))

    # Import roots of the packages, relative to the runfiles of this
    # workspace: `imports` are `<repository>/<path>`.
    imports = depset(transitive = [d[PyInfo].imports for d in ctx.attr.deps]).to_list()
    arguments = [
        ctx.file._tool.short_path,
        "mlflow_export",
        "--target",
        str(ctx.label),
        "--manifest",
        manifest.short_path,
    ]
    for imp in imports:
        arguments.extend(["--pythonpath", "../" + imp])
    launcher = runfiles_launcher(
        ctx,
        ctx.label.name + ".sh",
        python,
        arguments,
        "Logs {} to an MLflow tracking store: bazel run {} -- --tracking-uri URI [--experiment NAME]".format(ctx.attr.search.label, ctx.label),
    )
    files = [manifest, report.json, report.best_card] + cards.values() + ([report.html] if report.html else [])
    return [DefaultInfo(
        executable = launcher,
        runfiles = ctx.runfiles(
            files = files + ctx.files._mlflow_export_modules,
            transitive_files = depset(transitive = [python.files, packages.inputs]),
        ),
    )]

search_mlflow = rule(
    implementation = _search_mlflow_impl,
    doc = """Logs a search to an MLflow tracking store when run.

```sh
bazel run //pkg:search.mlflow -- --tracking-uri sqlite:///mlflow.db [--experiment NAME] [--artifact-location DIR]
```

One parent run for the search and one child run per trial: the trial's
hyperparameters as params, its metrics (each evaluated epoch's as a step), its
status (ok `FINISHED`, stopped `KILLED`, failed `FAILED`), tags
`databazel.target` (its Bazel label), `databazel.model_sha256`,
`databazel.search`, ..., and its lineage card as the artifact
`lineage_card.json`; the parent has the best trial's metrics, the report (and
the HTML report) as artifacts. Running it again logs nothing twice: the
parent run is found by the sha256 of the report, and an interrupted export is
completed. A rebuilt search with other results is a new parent run. The
tracking URI defaults to `$MLFLOW_TRACKING_URI`, the experiment to the
search's label; relative paths are relative to where `bazel run` started.
`hyperparam_search` creates one, `<name>.mlflow` (tagged `manual`, so
`bazel build //...` neither builds it nor fetches MLflow). See docs/reports.md.""",
    attrs = {
        "deps": attr.label_list(
            providers = [PyInfo],
            doc = "MLflow's client with its dependencies: `[\"@<env>//:mlflow-skinny\"]` (or `mlflow`), from a Python environment of its own, such as this repository's `@databazel_mlflow`. Only this target gets them; no trial and no step of the build does.",
        ),
        "search": attr.label(
            mandatory = True,
            providers = [SearchReportInfo],
            doc = "The `hyperparam_search` (or `search_report`) target to log.",
        ),
        "_tool": TOOL,
        "_mlflow_export_modules": attr.label(
            default = Label("//databazel/private:mlflow_export_modules"),
            allow_files = True,
        ),
    },
    executable = True,
    toolchains = [PY_TOOLCHAIN_TYPE],
)
