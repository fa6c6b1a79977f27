"""Run a user's training or evaluation script as a Bazel action.

Bazel starts it through the tools' entry point (``tool.py runner``), with
paths relative to the action's working directory (the execroot)::

    python3 tool.py runner train --target //pkg:name --hyperparams-file HP.json \\
        --model-output-path OUT --data PATH [--data PATH ...] --script SCRIPT \\
        [--python-script] [--pythonpath DIR ...] [--timeout SECONDS] [--gpus N] \\
        [--epoch K [--init-model-path CHECKPOINT]] [--input FILE ...] [--network]

    python3 tool.py runner evaluate --target //pkg:name --model-path MODEL \\
        --data PATH [--data PATH ...] --metrics-output METRICS.json \\
        --output-dir DIR --script SCRIPT [--python-script] [--pythonpath DIR ...] \\
        [--timeout SECONDS] [--ignore-metric NAME ...] [--input FILE ...] [--network]

    Both take [--args JSON]: the target's command-line template (below).

The user script is invoked without a shell, with stdin from /dev/null::

    train:    SCRIPT --data DATA --model-output-path OUT --hyperparams JSON \\
                  [--epoch K [--init-model-path CHECKPOINT]]
    evaluate: SCRIPT --model-path MODEL --data-path DATA --output-dir DIR

* ``--epoch K`` (training in epochs, ``model(epochs = N)``): the script runs
  epoch K (1-based) and gets ``--epoch K``; from the second epoch on it also
  gets ``--init-model-path`` with the checkpoint epoch K - 1 wrote, to resume
  from.  Without ``--epoch`` the script gets neither flag.  A checkpoint that
  is a failed epoch's record (``--allow-failure``) is not given to the script:
  the record is passed on as this epoch's result.

* ``--python-script`` runs SCRIPT with this interpreter (``sys.executable``),
  with PYTHONSAFEPATH=1 and the script's directory, unresolved, first on
  PYTHONPATH (so only declared sibling modules import in a sandbox); without it SCRIPT must itself be executable (a py_binary launcher, a
  ``#!/bin/sh`` script, ...).
* ``--pythonpath DIR`` (repeatable) prepends DIR, made absolute, to the
  script's PYTHONPATH, in the given order.  The rest of the environment is the
  runner's own.
* JSON is the hyperparameters file re-serialised as a compact JSON object of
  strings with sorted keys, e.g. ``{"C":"0.1","max_iter":"100"}``.  It reaches
  the script as a single argv element, byte for byte.
* DATA: with exactly one ``--data`` path the script gets that path unchanged.
  With several, the runner makes a directory beside the output
  (``OUT.databazel-data``, ``DIR.databazel-data`` for evaluate), holding one
  relative symlink per path, laid out by each path's location relative to
  the deepest directory containing all of them (``os.path.commonpath`` of
  their parent directories), and passes that directory: the same argument on
  every run and machine.  For example ``--data d/train/x.csv --data
  d/test/y.csv`` gives ``OUT.databazel-data/train/x.csv`` and
  ``OUT.databazel-data/test/y.csv``.  The directory is removed when the
  script has finished.
* ``--timeout SECONDS``: the script runs in a session of its own; when it is
  still running after SECONDS, it and every process it started get SIGTERM,
  then SIGKILL 5 s later, and the runner fails saying so.  SIGTERM, SIGINT or
  SIGHUP sent to the runner stop the script the same way.
* ``--gpus N``: before the script starts, the runner takes N of the
  machine's GPUs (``gpus.py``: an exclusive lock on each, waiting while fewer
  are free, at most ``--timeout`` or ``gpus.wait_limit``'s default), runs the
  script with ``CUDA_VISIBLE_DEVICES`` naming them and the locks inherited,
  and frees them when both have exited.  Without it the script gets
  ``CUDA_VISIBLE_DEVICES=""`` unless the environment sets it.  A GPU the
  runner cannot get fails the action even with ``--allow-failure``.
* ``--args JSON`` (both subcommands; the target's ``args``): a JSON list of
  templates (``templates.py``) replacing the command lines above: the script
  gets exactly those arguments, one per template, with ``{data}``,
  ``{model_output_path}``, ``{hyperparams}`` (JSON), ``{hp.NAME}``,
  ``{epoch}`` and ``{init_model_path}`` (train) or ``{model_path}``,
  ``{data_path}``, ``{output_dir}`` and ``{metrics_file}`` (evaluate, which is
  DIR/metrics.json) filled in.
* ``--ignore-metric NAME`` (evaluate, repeatable; ``ignore_metrics``): an entry
  of the metrics file that is not a metric (a path, a note) and is left out
  of METRICS.json, whatever its value.
* evaluate: DIR is created if needed.  After the script exits 0 the runner
  reads ``DIR/metrics.json`` (format: ``contract.METRICS_FORMAT``) and writes its
  canonical form to METRICS.json.

The script's stdout and stderr go to temporary files.  On success the runner
prints nothing.  On any failure it prints one error starting with
``databazel: error: <target>: `` (with the last 20 lines of the script's stderr,
when the script failed), removes the declared output file, and exits 1.

``--allow-failure`` (both subcommands) turns a failure of the trial (the script
failed or broke the contract) into a recorded result: the runner prints a
``databazel: warning:`` line, writes a failure record (``records.FailureRecord``) in
place of the output and exits 0.  train writes FAILED_MODEL_HEADER followed by
the record's JSON as the model file; evaluate writes the record's canonical
JSON as the metrics file (``{"status": "failed", ...}``), and does so without
running its script when the model it gets is a failed training's record.
Without ``--allow-failure``, evaluating such a model is an error.

Isolation (``isolation.py``): where Bazel does not sandbox the action (a
warm worker, the local strategy), the script runs in Linux namespaces of its
own, seeing only the files its arguments name (the script, ``--data``, the
model, ``--input``: the files of ``deps`` and ``data``, ``--site-package``:
the declared distributions), without network unless ``--network``.
``--unisolated`` (``--@databazel//databazel:isolate=false``) turns that off.

``--decision FILE`` (both subcommands; early stopping, ``rung.py``): a rung's
decision for this trial.  ``{"status": "promoted"}``: the step runs as usual.
A stop record (``records.StopRecord``): the script does not run; train writes
STOPPED_MODEL_HEADER followed by the record as the checkpoint, evaluate writes
the record as the metrics file (and an empty DIR).

One module, past 450 lines, a fifth of them this specification: the train
and evaluate subcommands, their command line and what a failure leaves are
one job; running the script (supervise.py), isolating it (isolation.py),
GPUs (gpus.py) and the contract checks (contract.py, outputs.py) are not here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys


from contract import (
    ContractError,
    FailedModel,
    MachineError,
    OutputContractError,
    RunnerError,
    encode_hyperparams,
    error_line,
    format_metrics,
    parse_hyperparams,
    parse_metrics,
)
from outputs import (
    check_output_dir,
    check_output_file,
    list_dir,
    remove_path,
    remove_special_entries,
    write_atomic,
)
from records import (
    FAILED_MODEL_HEADER,
    STOPPED_MODEL_HEADER,
    failure_record,
    format_failure,
    format_record,
    read_decision,
    read_failed_model,
    read_stopped_model,
    signal_name,
)
from supervise import data_path, guarded_main, run_script

import gpus
import isolation
import templates


def script_view(
    args: argparse.Namespace,
    outputs: list[str],
    output_dirs: list[str],
    inputs: list[str],
) -> isolation.View | None:
    """What the script may see and write where databazel isolates it (supervise.sandbox_for).

    Every file the action has for the script: the script (with its runfiles),
    `inputs` (its data, model, ...), the files of `deps` and `data`
    (`--input`), the declared distributions (`--site-package`) and the
    interpreter. None for a target built with `--unisolated`.
    """
    if args.unisolated:
        return None
    cwd = os.getcwd()
    seen = [args.script, *inputs, *args.input, *args.site_package]
    if not args.python_script:
        seen += isolation.runfiles_inputs(os.path.abspath(args.script), cwd)
    interpreter = os.path.relpath(sys.executable, cwd)
    if not interpreter.startswith(".."):
        venv = os.path.dirname(os.path.dirname(interpreter))
        seen += [interpreter, os.path.join(venv, "pyvenv.cfg")]
    return isolation.View(
        inputs=seen, outputs=outputs, output_dirs=output_dirs, network=args.network
    )


def train(args: argparse.Namespace) -> None:
    stop = read_decision(args.decision) if args.decision else None
    if stop is not None:
        remove_path(args.model_output_path)
        os.makedirs(os.path.dirname(args.model_output_path) or ".", exist_ok=True)
        write_atomic(
            args.model_output_path,
            STOPPED_MODEL_HEADER.decode("ascii") + format_record(stop),
        )
        return
    try:
        with open(args.hyperparams_file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RunnerError(
            f"cannot read hyperparameters file {args.hyperparams_file}: {e}"
        ) from None
    try:
        hyperparams = parse_hyperparams(text)
    except ContractError as e:
        raise ContractError(
            f"invalid hyperparameters file {args.hyperparams_file}: {e}"
        ) from None

    out: str = args.model_output_path
    remove_path(out)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    encoded = encode_hyperparams(hyperparams)
    script_args = [
        "--data",
        "",  # the data path, below
        "--model-output-path",
        out,
        "--hyperparams",
        encoded,
    ]
    if args.init_model_path is not None and args.epoch is None:
        raise RunnerError("--init-model-path needs --epoch")
    if args.epoch is not None:
        script_args += ["--epoch", str(args.epoch)]
    if args.init_model_path is not None:
        if not os.path.isfile(args.init_model_path):
            raise RunnerError(f"checkpoint {args.init_model_path} does not exist")
        if read_stopped_model(args.init_model_path) is not None:
            raise RunnerError(
                f"the checkpoint {args.init_model_path} is of a trial that early "
                "stopping stopped, but this epoch's decision lets it train on"
            )
        failed = read_failed_model(args.init_model_path)
        if failed is not None:
            raise FailedModel(
                f"the checkpoint {args.init_model_path} is the failure record of "
                f"{failed['target']}, whose {failed['stage']} step failed: "
                f"{failed['error']}"
            )
        script_args += ["--init-model-path", args.init_model_path]
    with data_path(args.data, "training_data", out + DATA_DIRECTORY) as data:
        script_args[1] = data
        if args.arg_templates is not None:
            script_args = templates.fill(
                templates.load_templates(args.arg_templates),
                templates.TRAIN_PLACEHOLDERS,
                {
                    "data": data,
                    "model_output_path": out,
                    "hyperparams": encoded,
                    **(
                        {
                            "epoch": str(args.epoch),
                            "init_model_path": args.init_model_path,
                        }
                        if args.epoch is not None
                        else {}
                    ),
                },
                hyperparams,
            )
        inputs = [args.hyperparams_file, *args.data, data]
        if args.init_model_path:
            inputs.append(args.init_model_path)
        _run_on_gpus("train", args, script_args, script_view(args, [out], [], inputs))
    told = (
        "--model-output-path" if args.arg_templates is None else "{model_output_path}"
    )
    check_output_file("train", args.script, out, "model", told)


def evaluate(args: argparse.Namespace) -> None:
    output: str = args.metrics_output
    out_dir: str = args.output_dir
    script: str = args.script
    remove_path(output)
    os.makedirs(out_dir, exist_ok=True)
    stop = read_decision(args.decision) if args.decision else None
    if stop is not None:
        write_atomic(output, format_record(stop))
        return
    metrics_file = os.path.join(out_dir, "metrics.json")
    remove_path(metrics_file)
    failed = (
        read_failed_model(args.model_path) if os.path.isfile(args.model_path) else None
    )
    if failed is not None:
        raise FailedModel(
            f"the model {args.model_path} is the failure record of {failed['target']}, "
            f"whose {failed['stage']} step failed: {failed['error']}"
        )
    told = "--output-dir"
    with data_path(args.data, "test_data", out_dir + DATA_DIRECTORY) as data:
        script_args = [
            "--model-path",
            args.model_path,
            "--data-path",
            data,
            "--output-dir",
            out_dir,
        ]
        if args.arg_templates is not None:
            arg_templates = templates.load_templates(args.arg_templates)
            script_args = templates.fill(
                arg_templates,
                templates.EVALUATE_PLACEHOLDERS,
                {
                    "model_path": args.model_path,
                    "data_path": data,
                    "output_dir": out_dir,
                    "metrics_file": metrics_file,
                },
            )
            named = templates.placeholder_names(arg_templates)
            told = "{metrics_file}" if "metrics_file" in named else "{output_dir}"
        _run_on_gpus(
            "evaluate",
            args,
            script_args,
            script_view(args, [], [out_dir], [args.model_path, *args.data, data]),
        )
    check_output_dir("evaluate", script, out_dir)
    if os.path.lexists(metrics_file):
        check_output_file("evaluate", script, metrics_file, "metrics.json", told)
    elif told == "{metrics_file}":
        raise OutputContractError(
            f"evaluate script {script} exited 0 but wrote no metrics file at "
            f"{metrics_file}, the path given by {told} ({list_dir(out_dir)})"
        )
    else:
        raise OutputContractError(
            f"evaluate script {script} exited 0 but wrote no metrics.json in {out_dir} "
            f"({list_dir(out_dir)}); the script must write DIR/metrics.json where DIR "
            f"is the path given by {told}"
        )
    try:
        with open(metrics_file, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise OutputContractError(
            f"evaluate script {script} wrote {metrics_file} that is not UTF-8 text"
        ) from None
    try:
        metrics = parse_metrics(text, ignore=args.ignore_metric)
    except ContractError as e:
        raise OutputContractError(
            f"evaluate script {script} wrote an invalid {metrics_file}: {e}\n"
            'Expected a JSON object mapping metric names to finite numbers, e.g. {"accuracy": 0.97}; '
            "put entries that are not metrics in `ignore_metrics` (of `evaluate` or `hyperparam_search`)"
        ) from None
    write_atomic(output, format_metrics(metrics))


# Beside the output: the directory of links a script gets as its data when
# there are several data files (supervise.data_path).
DATA_DIRECTORY = ".databazel-data"


def _run_on_gpus(
    kind: str,
    args: argparse.Namespace,
    script_args: list[str],
    view: isolation.View | None,
) -> None:
    """run_script, holding the target's `gpus` (gpus.py) while the script runs."""
    held: contextlib.AbstractContextManager[tuple[list[str], list[int]]] = (
        gpus.allocate(
            args.gpus,
            args.target,
            gpus.lock_dir(),
            notice=lambda line: print(f"databazel: {line}", file=sys.stderr),
            limit=gpus.wait_limit(args.timeout),
        )
        if args.gpus
        else contextlib.nullcontext(([], []))
    )
    with held as (ids, fds):
        run_script(
            kind,
            args.script,
            args.python_script,
            args.pythonpath,
            script_args,
            args.timeout,
            extra_env=gpus.script_environment(args.gpus, ids, dict(os.environ)),
            pass_fds=fds,
            view=view,
        )


def record_failure(args: argparse.Namespace, error: RunnerError) -> None:
    """Write the failure record in place of the command's output."""
    if args.command == "train":
        init = args.init_model_path
        failed_init = read_failed_model(init) if init and os.path.isfile(init) else None
        record = failed_init or failure_record("train", args.target, error)
        remove_path(args.model_output_path)
        os.makedirs(os.path.dirname(args.model_output_path) or ".", exist_ok=True)
        write_atomic(
            args.model_output_path,
            FAILED_MODEL_HEADER.decode("ascii") + format_failure(record),
        )
    else:
        failed_model = (
            read_failed_model(args.model_path)
            if os.path.isfile(args.model_path)
            else None
        )
        record = failed_model or failure_record("evaluate", args.target, error)
        os.makedirs(args.output_dir, exist_ok=True)
        write_atomic(args.metrics_output, format_failure(record))


# ---------------------------------------------------------------------------
# Command line


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, got {text}"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


@functools.lru_cache(maxsize=None)
def build_parser() -> argparse.ArgumentParser:
    """The runner's argument parser (one per process: a warm worker reuses it)."""
    parser = argparse.ArgumentParser(
        prog="runner.py", description="databazel action runner"
    )
    # A top-level entry of a package directory the script may import (of the
    # packages in `deps`: python_env's site-packages, a rules_python pip
    # repository): a warm worker (worker.py) makes exactly these importable.
    parser.add_argument("--site-package", action="append", default=[])
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train")
    train_cmd.add_argument("--hyperparams-file", required=True)
    train_cmd.add_argument("--model-output-path", required=True)
    train_cmd.add_argument("--epoch", type=_positive_int, default=None)
    train_cmd.add_argument("--init-model-path", default=None)
    eval_cmd = commands.add_parser("evaluate")
    eval_cmd.add_argument("--model-path", required=True)
    eval_cmd.add_argument("--metrics-output", required=True)
    eval_cmd.add_argument("--output-dir", required=True)
    # Top-level entries of the script's metrics file left out of the metrics
    # (`ignore_metrics`): any value, dropped from the canonical file.
    eval_cmd.add_argument("--ignore-metric", action="append", default=[])
    for cmd in (train_cmd, eval_cmd):
        cmd.add_argument("--target", required=True)
        cmd.add_argument("--data", action="append", required=True)
        cmd.add_argument("--script", required=True)
        cmd.add_argument("--python-script", action="store_true")
        cmd.add_argument("--pythonpath", action="append", default=[])
        # The target's `args`: a JSON list of templates (templates.py) that
        # replaces the fixed command line.
        cmd.add_argument("--args", dest="arg_templates", default=None)

        cmd.add_argument("--timeout", type=_positive_seconds, default=None)
        # GPUs the script holds while it runs (gpus.py); 0: none, and
        # CUDA_VISIBLE_DEVICES="" unless `env` sets it.
        cmd.add_argument("--gpus", type=_positive_int, default=0)
        cmd.add_argument("--allow-failure", action="store_true")
        cmd.add_argument("--decision", default=None)
        # A file of `deps` or `data` the script may read (isolation.py: exactly
        # these, the script, its data and its packages are in its view).
        cmd.add_argument("--input", action="append", default=[])
        # network = True: the script keeps the machine's network.
        cmd.add_argument("--network", action="store_true")
        # --@databazel//databazel:isolate=false: databazel does not isolate
        # the script (a different command line: a different cache key).
        cmd.add_argument("--unisolated", action="store_true")
    return parser


def expand_argv(argv: list[str]) -> list[str]:
    """The arguments, with a last `@FILE` (Bazel's params file) replaced by its lines.

    Bazel passes the arguments in a params file, one per line, so that the
    same action can also run in a persistent worker. Either way non-ASCII
    arguments come UTF-8 encoded twice (`undo_double_utf8`).
    """
    if argv and argv[-1].startswith("@"):
        with open(argv[-1][1:], encoding="utf-8") as f:
            argv = argv[:-1] + f.read().splitlines()
    return undo_double_utf8(argv)


def undo_double_utf8(argv: list[str]) -> list[str]:
    """`argv` decoded once more if Bazel encoded it twice, else `argv`.

    Bazel 4.2 holds a string as its UTF-8 bytes, one character each, and
    writes params files and WorkRequests in UTF-8 again: `dätä_日本.txt`
    arrives as `dÃ¤tÃ¤_æ\x97¥æ\x9c¬.txt`. Arguments whose characters are all
    below 256 and whose bytes are UTF-8 are such; a character above 255 (or
    bytes that are not UTF-8) says they were encoded once, as a newer Bazel
    or a person calling the runner does.
    """
    if all(arg.isascii() for arg in argv):
        return argv
    try:
        return [arg.encode("latin-1").decode("utf-8") for arg in argv]
    except (UnicodeEncodeError, UnicodeDecodeError):
        return argv


WORKER_SAVED_ENV = "DATABAZEL_WORKER_SAVED_ENV"
# The entry point the worker is started with again (tool.py, beside this file).
_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tool.py")


def _reexec_worker(argv: list[str]) -> None:
    """Start the worker again without -I, honouring only PYTHONHASHSEED of `env`.

    A sandboxed runner (`python3 -I`) sees none of `env`'s PYTHON* variables,
    and a sandboxed script, a new interpreter, honours all of them. A forked
    script inherits the worker's start-up, so the worker honours the one
    that only a start can set (the hash seed, which the runner's behaviour
    does not depend on) and sets the others aside for the scripts: they apply
    those that act at run time (worker.RUNTIME_ENV), and scripts whose `env`
    has any other run as new interpreters (worker.forkable_env).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTHON") or k == "PYTHONHASHSEED"
    }
    saved = {k: v for k, v in os.environ.items() if k not in env}
    env[WORKER_SAVED_ENV] = json.dumps(saved)
    os.execve(
        sys.executable,
        [sys.executable, "-S", "-X", "utf8", _TOOL, "runner", *argv],
        env,
    )


def main(argv: list[str]) -> int:
    """``tool.py runner ARGS``: run one action, guarded (supervise.guarded_main)."""
    return guarded_main(lambda: run(argv), expand_argv(argv))


def run(argv: list[str]) -> int:
    """Run one action, or (``--persistent_worker``) serve them as a warm worker."""
    argv = expand_argv(argv)
    if "--persistent_worker" in argv:
        if sys.flags.isolated:
            _reexec_worker(argv)
        import worker  # beside this file; only warm runs need it

        site = [v for k, v in zip(argv, argv[1:]) if k == "--site-package"]
        return worker.serve(
            sys.modules[__name__], site, sys.stdin.buffer, sys.stdout.buffer
        )
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        if args.command == "evaluate":
            # Whatever happened, Bazel may move the directory: nothing in it
            # may block or fail that (a FIFO, a socket) or point elsewhere.
            remove_special_entries(args.output_dir)


def _run(args: argparse.Namespace) -> int:
    output: str = (
        args.model_output_path if args.command == "train" else args.metrics_output
    )
    try:
        try:
            if args.command == "train":
                train(args)
            else:
                evaluate(args)
            return 0
        except RunnerError as e:
            if not args.allow_failure or isinstance(e, MachineError):
                raise  # an error of the machine (its GPUs) is no result of the trial
            record_failure(args, e)
            print(
                f"databazel: warning: {args.target}: the trial failed; recorded as "
                f"its result (allow_failure): {str(e).splitlines()[0]}",
                file=sys.stderr,
            )
            return 0
    except (RunnerError, OSError) as e:
        message = str(e)
    except SystemExit as e:
        # Stopped by a signal (see _wait): leave no output behind.
        remove_path(output)
        if isinstance(e.code, int) and e.code > 128:
            print(
                error_line(
                    args.target,
                    f"the databazel runner was told to stop (signal "
                    f"{signal_name(128 - e.code)}); it stopped the {args.command} "
                    "script and every process it started",
                ),
                file=sys.stderr,
            )
        raise
    except Exception as e:  # noqa: BLE001 - any failure is one error, never a traceback
        message = f"internal error in the databazel runner: {type(e).__name__}: {e}"
    remove_path(output)
    print(error_line(args.target, message), file=sys.stderr)
    return 1
