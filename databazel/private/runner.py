"""Run a user's training or evaluation script as a Bazel action.

Bazel calls this file with paths relative to the action's working directory
(the execroot)::

    python3 runner.py train --target //pkg:name --hyperparams-file HP.json \\
        --model-output-path OUT --data PATH [--data PATH ...] --script SCRIPT \\
        [--python-script] [--pythonpath DIR ...] [--timeout SECONDS] [--gpus N] \\
        [--epoch K [--init-model-path CHECKPOINT]]

    python3 runner.py evaluate --target //pkg:name --model-path MODEL \\
        --data PATH [--data PATH ...] --metrics-output METRICS.json \\
        --output-dir DIR --script SCRIPT [--python-script] [--pythonpath DIR ...] \\
        [--timeout SECONDS]

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
  With several, the runner creates a temporary directory holding one symlink
  per path (to its absolute path), laid out by each path's location relative
  to the deepest directory containing all of them (``os.path.commonpath`` of
  their parent directories), and passes that directory.  For example
  ``--data d/train/x.csv --data d/test/y.csv`` gives ``TMP/train/x.csv`` and
  ``TMP/test/y.csv``.  The directory is removed when the script has finished.
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

``--decision FILE`` (both subcommands; early stopping, ``rung.py``): a rung's
decision for this trial.  ``{"status": "promoted"}``: the step runs as usual.
A stop record (``records.StopRecord``): the script does not run; train writes
STOPPED_MODEL_HEADER followed by the record as the checkpoint, evaluate writes
the record as the metrics file (and an empty DIR).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

# Import siblings as the action sees them (its inputs), not via resolved symlinks.
_HERE = os.path.dirname(os.path.abspath(__file__))
_RESOLVED = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [_HERE, *(p for p in sys.path if p not in (_HERE, _RESOLVED))]

from contract import (  # noqa: E402
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
from outputs import (  # noqa: E402
    check_output_dir,
    check_output_file,
    list_dir,
    remove_path,
    remove_special_entries,
    write_atomic,
)
from records import (  # noqa: E402
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
from supervise import data_path, guarded_main, run_script  # noqa: E402

import gpus  # noqa: E402


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
    script_args = [
        "--data",
        "",  # the data path, below
        "--model-output-path",
        out,
        "--hyperparams",
        encode_hyperparams(hyperparams),
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
    with data_path(args.data, "training_data") as data:
        script_args[1] = data
        _run_on_gpus("train", args, script_args)
    check_output_file("train", args.script, out, "model", "--model-output-path")


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
    with data_path(args.data, "test_data") as data:
        _run_on_gpus(
            "evaluate",
            args,
            [
                "--model-path",
                args.model_path,
                "--data-path",
                data,
                "--output-dir",
                out_dir,
            ],
        )
    check_output_dir("evaluate", script, out_dir)
    if os.path.lexists(metrics_file):
        check_output_file(
            "evaluate", script, metrics_file, "metrics.json", "--output-dir"
        )
    else:
        raise OutputContractError(
            f"evaluate script {script} exited 0 but wrote no metrics.json in {out_dir} "
            f"({list_dir(out_dir)}); the script must write DIR/metrics.json where DIR "
            "is the path given by --output-dir"
        )
    try:
        with open(metrics_file, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise OutputContractError(
            f"evaluate script {script} wrote {metrics_file} that is not UTF-8 text"
        ) from None
    try:
        metrics = parse_metrics(text)
    except ContractError as e:
        raise OutputContractError(
            f"evaluate script {script} wrote an invalid {metrics_file}: {e}\n"
            'Expected a JSON object mapping metric names to finite numbers, e.g. {"accuracy": 0.97}'
        ) from None
    write_atomic(output, format_metrics(metrics))


def _run_on_gpus(kind: str, args: argparse.Namespace, script_args: list[str]) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner.py", description="databazel action runner"
    )
    # A top-level entry of site-packages the script may import (of the
    # packages in `deps`): a warm worker (worker.py) links exactly these.
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
    for cmd in (train_cmd, eval_cmd):
        cmd.add_argument("--target", required=True)
        cmd.add_argument("--data", action="append", required=True)
        cmd.add_argument("--script", required=True)
        cmd.add_argument("--python-script", action="store_true")
        cmd.add_argument("--pythonpath", action="append", default=[])

        cmd.add_argument("--timeout", type=_positive_seconds, default=None)
        # GPUs the script holds while it runs (gpus.py); 0: none, and
        # CUDA_VISIBLE_DEVICES="" unless `env` sets it.
        cmd.add_argument("--gpus", type=_positive_int, default=0)
        cmd.add_argument("--allow-failure", action="store_true")
        cmd.add_argument("--decision", default=None)
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


# Variables of `env` that change where Python finds modules: the worker's own
# process starts without them (its scripts get them back, see worker.py).
_WORKER_UNSAFE_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "PYTHONPLATLIBDIR",
    "PYTHONSAFEPATH",
    "PYTHONINSPECT",
)
WORKER_SAVED_ENV = "DATABAZEL_WORKER_SAVED_ENV"


def _reexec_worker(argv: list[str]) -> None:
    """Start the worker again without -I, so that its scripts get `env`'s PYTHON*.

    A sandboxed script is a new interpreter that honours PYTHONHASHSEED,
    PYTHONUTF8, PYTHONWARNINGS, ...; a forked one inherits the worker's, so
    the worker must honour them too. Those that would change the runner's own
    imports are set aside and given back to the scripts.
    """
    env = dict(os.environ)
    saved = {k: env.pop(k) for k in _WORKER_UNSAFE_ENV if k in env}
    env[WORKER_SAVED_ENV] = json.dumps(saved)
    os.execve(
        sys.executable, [sys.executable, "-S", os.path.abspath(__file__), *argv], env
    )


def main(argv: list[str] | None = None) -> int:
    argv = expand_argv(sys.argv[1:] if argv is None else argv)
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


if __name__ == "__main__":
    sys.exit(guarded_main(main, expand_argv(sys.argv[1:])))
