"""What `model` and `evaluate` share: attributes, the interpreter, the user's script, the runner action."""

load("@bazel_skylib//lib:shell.bzl", "shell")
load(":settings.bzl", "IsolateInfo", "WarmInfo")

PY_TOOLCHAIN_TYPE = "@bazel_tools//tools/python:toolchain_type"

# The environment every script starts from. Nothing from the user's shell reaches
# an action unless it is declared in the `env` attribute, so cache keys do not
# depend on it. One thread per BLAS/OpenMP pool keeps results bit-for-bit
# reproducible and lets Bazel's --jobs decide the parallelism.
DEFAULT_ENV = {
    "LC_ALL": "C.UTF-8",
    "MKL_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONNOUSERSITE": "1",
    "PYTHONUTF8": "1",
}

def script_attr(doc):
    """The attribute holding a user's script.

    Args:
      doc: the attribute's documentation.

    Returns:
      An attr.label accepting an executable target or a single `.py` file.
    """
    return attr.label(
        mandatory = True,
        # Any executable target (py_binary, sh_binary, ...) or one .py file;
        # resolve_script says what is wrong with anything else.
        allow_files = True,
        cfg = "exec",
        doc = doc,
    )

# The one entry point of databazel's tools (tool.py): every action and
# launcher runs `python3 -S tool.py NAME ARGS...`, NAME the tool's module.
TOOL = attr.label(
    default = Label("//databazel/private:tool.py"),
    allow_single_file = True,
)

COMMON_ATTRS = {
    "allow_failure": attr.bool(
        default = False,
        doc = "Record a failure of the script as this target's result instead of failing the build. A failed `model` writes a failure record (exit code, error, the tail of the script's stderr) in place of its model file; an `evaluate` of such a model, or whose own script failed, writes the record in place of its metrics (`{\"status\": \"failed\", ...}`). `search_report` ranks such trials last. Set by `hyperparam_search(allow_failure = True)`.",
    ),
    "data": attr.label_list(
        allow_files = True,
        doc = "Files the script reads at run time besides its data (configuration, vocabularies, ...). They are inputs of the action, so changing one re-runs it.",
    ),
    "deps": attr.label_list(
        allow_files = [".py"],
        doc = "Python code a plain `.py` script imports: `py_library` targets or `.py` files, including packages: python_env's (`@<env>//:numpy`, or `requirement(\"numpy\")` from `@<env>//:requirements.bzl`) or rules_python's `pip_parse` repositories (`requirement(\"numpy\")` from `@pypi//:requirements.bzl`). Only these, with their dependencies, are inputs of the action: a package the script imports but does not list here fails with an error naming the entry to add. Import roots are put on `PYTHONPATH`. (A `py_binary` script brings its own deps.)",
    ),
    "env": attr.string_dict(
        doc = "Environment variables for the script, on top of databazel's defaults (`PYTHONHASHSEED=0`, one BLAS/OpenMP thread, a fixed `PATH`, ...). Variables of the calling shell never reach the script; declare them here. They are part of the cache key. They are for the script only: databazel's runner starts isolated (`python3 -I -S`), so `PYTHONPATH`, `PYTHONHOME` and the like cannot break it. A NUL byte in a name or value fails at analysis.",
    ),
    "gpus": attr.int(
        default = 0,
        doc = "GPUs the script needs, like Ray Tune's `resources_per_trial={\"gpu\": N}`. Bazel 4.2 schedules no GPUs, so the runner takes N of the machine's GPUs for the script (an exclusive lock on each, shared by every build on the machine; while fewer are free the trial waits, holding its `--jobs` slot, at most its `timeout` or `DATABAZEL_GPU_WAIT` seconds of `env` (3600 by default), then fails naming what holds them), sets `CUDA_VISIBLE_DEVICES` to them and frees them when the script has exited. Which GPU a trial ran on is never part of its cache key. 0: the script gets `CUDA_VISIBLE_DEVICES=\"\"` (no GPU) unless `env` sets it. For remote execution give the target `exec_properties = {\"gpu\": \"N\"}` too (`hyperparam_search(gpus = N)` does it for its trials): Bazel 4.2 takes platform properties from the target only. See docs/deep-learning.md.",
    ),
    "network": attr.bool(
        default = False,
        doc = "Let the script open network connections (to an experiment tracker such as MLflow, say). By default a trial runs without network access: in Bazel's Linux sandbox it gets its own network namespace with only a loopback interface, so it can reach nothing, not even the host's `localhost` (execution requirement `block-network`; `network = True` gives `requires-network`). A trial's result should depend only on its declared inputs; what it sends out is not part of its cache key, and a cached trial sends nothing. In a warm worker (the default) and with the strategies that do not isolate (`local`, `processwrapper-sandbox`), databazel gives the script the same network namespace itself. See docs/reliability.md.",
    ),
    "timeout": attr.int(
        default = 0,
        doc = "Seconds the script may run; past them the runner kills it (and every process it started) and the build fails naming the target. 0: no limit. The timeout is an argument of the action, so changing it re-runs the action.",
    ),
    "_tool": TOOL,
    "_isolate": attr.label(
        default = Label("//databazel:isolate"),
        providers = [IsolateInfo],
    ),
    "_warm": attr.label(
        default = Label("//databazel:warm"),
        providers = [WarmInfo],
    ),
    "_runner_modules": attr.label(
        default = Label("//databazel/private:runner_modules"),
        allow_files = True,
    ),
}

def python_runtime(ctx):
    """The interpreter databazel runs its runner (and plain `.py` scripts) with.

    Args:
      ctx: the context of a rule that declares PY_TOOLCHAIN_TYPE.

    Returns:
      struct(executable = File or path string, files = depset of its files).
    """
    runtime = ctx.toolchains[PY_TOOLCHAIN_TYPE].py3_runtime
    if runtime == None:
        fail("{}: the registered Python toolchain has no Python 3 runtime; register one (see databazel's docs/python-environment.md)".format(ctx.label))
    if runtime.interpreter:
        return struct(executable = runtime.interpreter, files = depset([runtime.interpreter], transitive = [runtime.files]))
    return struct(executable = runtime.interpreter_path, files = runtime.files or depset())

def resolve_script(ctx, attr_name):
    """How to run the user's script named by attribute `attr_name`.

    Args:
      ctx: the rule context.
      attr_name: the attribute holding the script.

    Returns:
      struct(path = exec path, file = the File, python = whether to run it
      with the interpreter, tools = depset of the executable's files and
      runfiles, input_manifests for ctx.actions.run, inputs = depset).
    """
    target = getattr(ctx.attr, attr_name)
    files_to_run = target[DefaultInfo].files_to_run
    executable = files_to_run.executable if files_to_run else None
    if executable and not executable.is_source:
        tools, input_manifests = ctx.resolve_tools(tools = [target])
        return struct(path = executable.path, file = executable, python = False, tools = tools, input_manifests = input_manifests, inputs = depset())
    files = target.files.to_list()
    if len(files) != 1 or files[0].extension != "py":
        fail("{}: `{}` must be an executable target (such as a py_binary) or a single .py file; {} provides {}".format(
            ctx.label,
            attr_name,
            target.label,
            [f.short_path for f in files],
        ))
    return struct(path = files[0].path, file = files[0], python = True, tools = depset(), input_manifests = [], inputs = depset(files))

def _import_root(f):
    """The directory a Python file's imports are relative to (an exec path).

    None for a file of an installed package: its import root is the
    site-packages directory its py_library names in `imports`, and the
    repository's own root would shadow packages with the directories of
    python_env's alias packages.
    """
    if _SITE_PACKAGES in f.path:
        return None
    parts = [p for p in (f.root.path, f.owner.workspace_root if f.owner else "") if p]
    return "/".join(parts) or "."

_SITE_PACKAGES = "/site-packages/"

def _site_package_entry(f):
    """The top-level entry of an installed package's directory that file `f` is in.

    `.../site-packages/numpy` for a file of python_env's numpy. A file of
    another repository gives the top-level entry of that repository:
    `external/pypi_numpy/numpy`, or `external/pypi_numpy/numpy-2.4.6.dist-info`,
    for rules_python's `pip_parse` repository of numpy, whose root is the
    import root. A warm worker makes the entries of a directory that holds a
    `.dist-info` importable as a package directory, and ignores the others
    (a repository of first-party code). None for the main repository's files.
    """
    i = f.path.find(_SITE_PACKAGES)
    if i >= 0:
        end = i + len(_SITE_PACKAGES)
        return f.path[:end] + f.path[end:].split("/")[0]
    root = f.owner.workspace_root if f.owner else ""
    if not root or not f.is_source or not f.path.startswith(root + "/"):
        return None
    return root + "/" + f.path[len(root) + 1:].split("/")[0]

def _script_input(f):
    """A file of `deps` or `data` outside the package entries (the script's view lists it).

    A file inside an entry of `--site-package` is in the view with its
    entry, one link for the whole directory.
    """
    return None if _site_package_entry(f) else f.path

def _import_paths(ctx, imports):
    """Exec paths for the `imports` of py_library targets (`workspace/path` strings)."""
    paths = []
    for imp in imports:
        repo, _, rest = imp.partition("/")
        rel = rest if repo == ctx.workspace_name else "external/" + imp
        paths.extend([rel, ctx.bin_dir.path + "/" + rel])
    return paths

def dependencies(ctx, deps = None, data = None):
    """Inputs and PYTHONPATH entries from Python `deps` and `data`.

    Args:
      ctx: the rule context.
      deps: targets (py_library, `.py` files); default `ctx.attr.deps`.
      data: targets whose files are inputs; default `ctx.attr.data`.

    Returns:
      struct(inputs = depset, code = depset of the files of `deps` (their
      sources and runfiles), data = depset of the files of `data`, sources = depset of Python files whose import
      roots go on PYTHONPATH, import_paths = list of further PYTHONPATH entries).
    """
    transitive = []
    runfiles = []
    imports = []
    for dep in ctx.attr.deps if deps == None else deps:
        if PyInfo in dep:
            transitive.append(dep[PyInfo].transitive_sources)
            imports.append(dep[PyInfo].imports)

            # A package's compiled modules, bytecode and data files are its
            # runfiles (py_library `data`), not Python sources.
            runfiles.append(dep[DefaultInfo].default_runfiles.files)
        else:
            transitive.append(dep.files)
    sources = depset(transitive = transitive)
    code = depset(transitive = [sources] + runfiles)
    data_files = depset(transitive = [d.files for d in (ctx.attr.data if data == None else data)])
    return struct(
        inputs = depset(transitive = [code, data_files]),
        code = code,
        data = data_files,
        sources = sources,
        import_paths = _import_paths(ctx, depset(transitive = imports).to_list()),
    )

def tool_packages(ctx, deps):
    """What a databazel tool (plot.py, html_report.py, suggest.py) needs to import the packages `deps`.

    Args:
      ctx: the rule context.
      deps: the packages' targets (`plot_deps`, `suggest_deps`).

    Returns:
      struct(inputs = depset of the packages' files, env = DEFAULT_ENV with
      PYTHONPATH set to their import roots).
    """
    packages = dependencies(ctx, deps, [])
    env = dict(DEFAULT_ENV)
    if packages.import_paths:
        env["PYTHONPATH"] = ":".join(packages.import_paths)
    return struct(inputs = packages.inputs, env = env)

def runfiles_launcher(ctx, name, python, arguments, description):
    """Writes the executable of a `bazel run` or `bazel test` target that runs a databazel tool.

    The launcher changes to the target's runfiles (where `bazel run` and
    `bazel test` start it; started directly, it finds them beside itself) and
    runs the interpreter isolated (`-I -S`) on `arguments`, then the
    arguments it was given.

    Args:
      ctx: the rule context.
      name: the launcher's file name.
      python: the interpreter, from `python_runtime(ctx)`.
      arguments: the tool's path and its arguments, paths relative to this
        workspace's directory in the runfiles (`File.short_path`).
      description: what the target does, for the launcher's comment.

    Returns:
      The launcher File; make it the target's executable, with `python.files`
      and the files of `arguments` in its runfiles.
    """
    interpreter = python.executable.short_path if type(python.executable) == "File" else python.executable
    launcher = ctx.actions.declare_file(name)
    ctx.actions.write(
        launcher,
        "\n".join([
            "#!/bin/sh",
            "# " + " ".join(description.splitlines()),
            "if [ -d \"$0.runfiles/{ws}\" ]; then cd \"$0.runfiles/{ws}\" || exit 2".format(ws = ctx.workspace_name),
            "elif [ -n \"${{RUNFILES_DIR:-}}\" ]; then cd \"$RUNFILES_DIR/{ws}\" || exit 2".format(ws = ctx.workspace_name),
            "fi",
            "exec {} -I -S {} \"$@\"".format(shell.quote(interpreter), " ".join([shell.quote(a) for a in arguments])),
            "",
        ]),
        is_executable = True,
    )
    return launcher

def describe_hyperparams(hyperparams, limit = 160):
    """Hyperparameters for progress messages.

    Args:
      hyperparams: dict of hyperparameters.
      limit: characters after which the text is cut.

    Returns:
      ` (k=v, k2=v2)`, or "" when there are none.
    """
    if not hyperparams:
        return ""
    text = ", ".join(["{}={}".format(k, v) for k, v in hyperparams.items()])
    if len(text) > limit:
        text = text[:limit] + "..."
    return " ({})".format(text)

def check_env(ctx):
    """Fails naming the target when `env` holds what no process environment can.

    Args:
      ctx: the context of a rule with COMMON_ATTRS.
    """
    for key, value in ctx.attr.env.items():
        if not key or "=" in key or "\0" in key:
            fail("{}: `env` has the variable name {}; a name must be non-empty, without `=` or NUL bytes".format(ctx.label, repr(key)))
        if "\0" in value:
            fail("{}: `env` value of {} contains a NUL byte, which no environment variable can hold; remove it (pass binary data in a file in `data`)".format(ctx.label, key))

def runner_arguments(ctx, subcommand):
    """The runner's arguments for `subcommand`, which `run_runner` completes.

    They reach the runner in a params file (`@FILE`, one per line), so that
    the same action can run in a persistent worker.

    Args:
      ctx: the rule context.
      subcommand: `train` or `evaluate`.

    Returns:
      An Args object; add the subcommand's own flags, then pass it to run_runner.
    """
    args = ctx.actions.args()
    args.use_param_file("@%s", use_always = True)
    args.set_param_file_format("multiline")
    args.add(subcommand)
    return args

def run_runner(ctx, script_attr_name, arguments, inputs, outputs, mnemonic, progress_message, target = None):
    """Registers the action that runs the runner, which runs the user's script.

    Args:
      ctx: the rule context.
      script_attr_name: the attribute holding the user's script.
      arguments: the Args object from runner_arguments, with the subcommand's own flags.
      inputs: depset of the subcommand's own inputs (data, model, ...).
      outputs: the declared outputs.
      mnemonic: the action's mnemonic.
      progress_message: the action's progress message.
      target: the label the runner names in its messages (`--target`); default
        `ctx.label`. Part of the command line, so part of the cache key.
    """
    python = python_runtime(ctx)
    script = resolve_script(ctx, script_attr_name)
    deps = dependencies(ctx)

    # The interpreter's arguments are the same for a sandboxed run and a warm
    # worker (Bazel starts the worker with them plus --persistent_worker);
    # everything else goes in a params file, which a worker gets as a
    # WorkRequest. -S: the runner is stdlib-only, so it skips `site` (the
    # environment's site-packages); the user's script still gets them.
    startup = ctx.actions.args()

    # -I: `env` is for the script; PYTHONPATH, PYTHONHOME and the other
    # PYTHON* variables in it must not reach the runner (nor the current
    # directory's modules). -X utf8: whatever locale `env` sets. (A warm
    # worker re-executes itself without -I: worker.py.)
    startup.add_all(["-I", "-S", "-X", "utf8"])
    startup.add(ctx.file._tool)
    startup.add("runner")

    # The top-level entries of the package directories of `deps` (python_env's
    # site-packages, rules_python's pip repositories), their
    # `<name>-<version>.dist-info` among them: a warm worker makes exactly
    # these importable and imports them ahead. They are startup arguments,
    # part of the worker key, so a worker that imported one version of a
    # package never serves a trial that declares another (Bazel 4.2 leaves
    # tools out of the key).
    startup.add_all(deps.code, map_each = _site_package_entry, uniquify = True, before_each = "--site-package")

    head = arguments
    head.add("--target", str(target or ctx.label))
    head.add("--script", script.path)
    if ctx.attr.timeout < 0:
        fail("{}: `timeout` must be a number of seconds, 0 for no limit; got {}".format(ctx.label, ctx.attr.timeout))
    if ctx.attr.timeout:
        head.add("--timeout", str(ctx.attr.timeout))
    if script.python:
        head.add("--python-script")
    if ctx.attr.allow_failure:
        head.add("--allow-failure")
    if ctx.attr.gpus < 0:
        fail("{}: `gpus` must be a number of GPUs, 0 for none; got {}".format(ctx.label, ctx.attr.gpus))
    if ctx.attr.gpus:
        head.add("--gpus", str(ctx.attr.gpus))

    # Import roots are computed when the action runs, not by flattening the
    # deps of every trial during analysis.
    head.add_all(deps.sources, map_each = _import_root, uniquify = True, before_each = "--pythonpath")
    head.add_all(deps.import_paths, before_each = "--pythonpath")

    # Where Bazel does not sandbox the action (a warm worker, the local
    # strategy), the runner isolates the script itself: these files, with the
    # packages' entries above, are what it sees (isolation.py).
    head.add_all(deps.code, map_each = _script_input, uniquify = True, before_each = "--input")
    head.add_all(deps.data, before_each = "--input")
    if ctx.attr.network:
        head.add("--network")
    if not ctx.attr._isolate[IsolateInfo].enabled:
        head.add("--unisolated")

    check_env(ctx)
    env = dict(DEFAULT_ENV)
    env.update(ctx.attr.env)

    # Warm by default: Bazel's default strategy runs the action in a
    # persistent worker (`--@databazel//databazel:warm=false`: a new process
    # in Bazel's sandbox).
    warm = ctx.attr._warm[WarmInfo].enabled
    ctx.actions.run(
        executable = python.executable,
        arguments = [startup, arguments],
        inputs = depset(transitive = [inputs, script.inputs]),
        tools = depset(ctx.files._runner_modules, transitive = [script.tools, deps.inputs, python.files]),
        input_manifests = script.input_manifests,
        outputs = outputs,
        env = env,
        mnemonic = mnemonic,
        progress_message = progress_message,
        use_default_shell_env = False,
        execution_requirements = dict(
            {"requires-network": ""} if ctx.attr.network else {"block-network": ""},
            **({"supports-workers": "1"} if warm else {})
        ),
    )
