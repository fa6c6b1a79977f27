"""What `model` and `evaluate` share: attributes, the interpreter, the user's script, the runner action."""

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

COMMON_ATTRS = {
    "allow_failure": attr.bool(
        default = False,
        doc = "Record a failure of the script as this target's result instead of failing the build. A failed `model` writes a failure record (exit code, error, the tail of the script's stderr) in place of its model file; an `evaluate` of such a model, or whose own script failed, writes the record in place of its metrics (`{\"status\": \"failed\", ...}`). `search_report` ranks such trials last. Set by `hyperparam_search(allow_failed_trials = True)`.",
    ),
    "data": attr.label_list(
        allow_files = True,
        doc = "Files the script reads at run time besides its data (configuration, vocabularies, ...). They are inputs of the action, so changing one re-runs it.",
    ),
    "deps": attr.label_list(
        allow_files = [".py"],
        doc = "Python code a plain `.py` script imports: `py_library` targets or `.py` files. Their import roots are put on `PYTHONPATH`. (A `py_binary` script brings its own deps.)",
    ),
    "env": attr.string_dict(
        doc = "Environment variables for the script, on top of databazel's defaults (`PYTHONHASHSEED=0`, one BLAS/OpenMP thread, a fixed `PATH`, ...). Variables of the calling shell never reach the script; declare them here. They are part of the cache key.",
    ),
    "timeout": attr.int(
        default = 0,
        doc = "Seconds the script may run; past them the runner kills it (and every process it started) and the build fails naming the target. 0: no limit. The timeout is an argument of the action, so changing it re-runs the action.",
    ),
    "_runner": attr.label(
        default = Label("//databazel/private:runner.py"),
        allow_single_file = True,
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
        fail("{}: the registered Python toolchain has no Python 3 runtime; register one (see databazel's README, 'Python environment')".format(ctx.label))
    if runtime.interpreter:
        return struct(executable = runtime.interpreter, files = depset([runtime.interpreter], transitive = [runtime.files]))
    return struct(executable = runtime.interpreter_path, files = runtime.files or depset())

def resolve_script(ctx, attr_name):
    """How to run the user's script named by attribute `attr_name`.

    Args:
      ctx: the rule context.
      attr_name: the attribute holding the script.

    Returns:
      struct(path = exec path, file = the File, python = whether to run it with
      the interpreter, tools = list for ctx.actions.run(tools), inputs = depset).
    """
    target = getattr(ctx.attr, attr_name)
    files_to_run = target[DefaultInfo].files_to_run
    executable = files_to_run.executable if files_to_run else None
    if executable and not executable.is_source:
        return struct(path = executable.path, file = executable, python = False, tools = [files_to_run], inputs = depset())
    files = target.files.to_list()
    if len(files) != 1 or files[0].extension != "py":
        fail("{}: `{}` must be an executable target (such as a py_binary) or a single .py file; {} provides {}".format(
            ctx.label,
            attr_name,
            target.label,
            [f.short_path for f in files],
        ))
    return struct(path = files[0].path, file = files[0], python = True, tools = [], inputs = depset(files))

def _import_root(f):
    """The directory a Python file's imports are relative to (an exec path)."""
    parts = [p for p in (f.root.path, f.owner.workspace_root if f.owner else "") if p]
    return "/".join(parts) or "."

def _import_paths(ctx, imports):
    """Exec paths for the `imports` of py_library targets (`workspace/path` strings)."""
    paths = []
    for imp in imports:
        repo, _, rest = imp.partition("/")
        rel = rest if repo == ctx.workspace_name else "external/" + imp
        paths.extend([rel, ctx.bin_dir.path + "/" + rel])
    return paths

def dependencies(ctx):
    """Inputs and PYTHONPATH entries from `deps` and `data`.

    Args:
      ctx: the context of a rule with COMMON_ATTRS.

    Returns:
      struct(inputs = depset, sources = depset of Python files whose import
      roots go on PYTHONPATH, import_paths = list of further PYTHONPATH entries).
    """
    transitive = []
    imports = []
    for dep in ctx.attr.deps:
        if PyInfo in dep:
            transitive.append(dep[PyInfo].transitive_sources)
            imports.append(dep[PyInfo].imports)
        else:
            transitive.append(dep.files)
    sources = depset(transitive = transitive)
    data = depset(transitive = [d.files for d in ctx.attr.data])
    return struct(
        inputs = depset(transitive = [sources, data]),
        sources = sources,
        import_paths = _import_paths(ctx, depset(transitive = imports).to_list()),
    )

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

def run_runner(ctx, subcommand, script_attr_name, arguments, inputs, outputs, mnemonic, progress_message):
    """Registers the action that runs the runner, which runs the user's script.

    Args:
      ctx: the rule context.
      subcommand: `train` or `evaluate`.
      script_attr_name: the attribute holding the user's script.
      arguments: an Args object with the subcommand's own flags.
      inputs: depset of the subcommand's own inputs (data, model, ...).
      outputs: the declared outputs.
      mnemonic: the action's mnemonic.
      progress_message: the action's progress message.
    """
    python = python_runtime(ctx)
    script = resolve_script(ctx, script_attr_name)
    deps = dependencies(ctx)

    head = ctx.actions.args()

    # -S: the runner is stdlib-only, so it skips `site` (the environment's
    # site-packages and its .pth files); the user's script still gets them.
    # That saves a few hundredths of a second per action (docs/benchmarks.md).
    head.add("-S")
    head.add(ctx.file._runner)
    head.add(subcommand)
    head.add("--target", str(ctx.label))
    head.add("--script", script.path)
    if ctx.attr.timeout < 0:
        fail("{}: `timeout` must be a number of seconds, 0 for no limit; got {}".format(ctx.label, ctx.attr.timeout))
    if ctx.attr.timeout:
        head.add("--timeout", str(ctx.attr.timeout))
    if script.python:
        head.add("--python-script")
    if ctx.attr.allow_failure:
        head.add("--allow-failure")

    # Import roots are computed when the action runs, not by flattening the
    # deps of every trial during analysis.
    head.add_all(deps.sources, map_each = _import_root, uniquify = True, before_each = "--pythonpath")
    head.add_all(deps.import_paths, before_each = "--pythonpath")

    env = dict(DEFAULT_ENV)
    env.update(ctx.attr.env)

    ctx.actions.run(
        executable = python.executable,
        arguments = [head, arguments],
        inputs = depset([ctx.file._runner], transitive = [inputs, script.inputs, deps.inputs, python.files]),
        tools = script.tools,
        outputs = outputs,
        env = env,
        mnemonic = mnemonic,
        progress_message = progress_message,
        use_default_shell_env = False,
    )
