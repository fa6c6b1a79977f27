"""End-to-end tests of hostile inputs, round two (issue 18): source directories as
data, outputs that are not regular files, an `env` aimed at the runner, inputs
that used to crash Bazel or the runner, a cache that requires credentials, and
what the sandbox lets a trial reach. One package per scenario, on the shared
fixture workspace."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import other_user
from bazel_harness import (
    SANDBOXED,
    Workspace,
    missing_server,
    needs_server,
    start_on_a_free_port,
    tool,
)
from other_user import OTHER_UID, needs_root

LOAD = (
    'load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model")\n'
)

# A training script of the standard library only that does what the
# environment variable BEHAVIOUR asks. It never imports `json` (a test shadows it).
TRAIN = """
import argparse, os, signal, sys, time
p = argparse.ArgumentParser()
p.add_argument("--data")
p.add_argument("--model-output-path")
p.add_argument("--hyperparams")
a = p.parse_args()
out = a.model_output_path
behaviour = os.environ.get("BEHAVIOUR", "ok")
if behaviour == "link_host":
    os.symlink("/etc/passwd", out)
elif behaviour == "link_source":
    os.symlink(os.path.realpath(a.data), out)
elif behaviour == "dangling":
    os.symlink("/nonexistent/model", out)
elif behaviour == "fifo":
    os.mkfifo(out)
elif behaviour == "kill_parent":
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(3)  # the guard of a sandboxed runner kills the script first
    sys.exit("the script's parent survived SIGKILL")
else:
    if os.path.isfile(a.data):
        with open(a.data, encoding="utf-8") as f:
            data = f.read()
    else:
        data = sorted(os.listdir(a.data))
    with open(out, "w", encoding="utf-8") as f:
        # PYTHONPATH past the script's directory (which is in the sandbox).
        pythonpath = os.environ["PYTHONPATH"].split(os.pathsep)[1:]
        f.write(repr({"data": data, "PYTHONPATH": pythonpath}))
"""

# An evaluation script of the standard library only, steered by BEHAVIOUR.
EVALUATE = """
import argparse, os, socket, sys
p = argparse.ArgumentParser()
p.add_argument("--model-path")
p.add_argument("--data-path")
p.add_argument("--output-dir")
a = p.parse_args()
behaviour = os.environ.get("BEHAVIOUR", "ok")
metrics = os.path.join(a.output_dir, "metrics.json")
texts = {
    "huge_int": '{"n": ' + "9" * 5000 + "}",
    "big_int": '{"n": 1' + "0" * 400 + "}",
    "deep": '{"n": ' + "[" * 100000 + "]" * 100000 + "}",
}
if behaviour == "fifo_metrics":
    os.mkfifo(metrics)
else:
    with open(metrics, "w", encoding="utf-8") as f:
        f.write(texts.get(behaviour, '{"accuracy": 0.5}'))
if behaviour == "fifo":
    os.makedirs(os.path.join(a.output_dir, "plots"))
    os.mkfifo(os.path.join(a.output_dir, "plots", "pipe"))
elif behaviour == "socket":
    socket.socket(socket.AF_UNIX).bind(os.path.join(a.output_dir, "sock"))
elif behaviour == "link":
    os.symlink("/etc/passwd", os.path.join(a.output_dir, "passwd"))
elif behaviour == "exit5":
    sys.exit("evaluation exploded")
"""


def scenario(ws: Workspace, package: str, build: str) -> None:
    """A package with the two scripts, a data file and BUILD."""
    ws.write(f"{package}/train.py", TRAIN)
    ws.write(f"{package}/evaluate.py", EVALUATE)
    ws.write(f"{package}/data.txt", "x\n")
    ws.write(f"{package}/BUILD", LOAD + build)


def model_rule(name: str, **attrs: str) -> str:
    """A `model` on the package's train.py; attrs are Starlark expressions."""
    lines = "".join(f"    {k} = {v},\n" for k, v in attrs.items())
    return (
        f'model(\n    name = "{name}",\n    train_executable = "train.py",\n{lines})\n'
    )


def evaluate_rule(name: str, behaviour: str, model: str = ":m") -> str:
    return f"""
evaluate(
    name = "{name}",
    env = {{"BEHAVIOUR": "{behaviour}"}},
    eval_executable = "evaluate.py",
    model = "{model}",
    test_data = "data.txt",
)
"""


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "databazel: error:" in line]


# --- 1. a source directory as data ----------------------------------------------


def test_a_source_directory_as_data_is_rejected_and_a_glob_rebuilds(
    ws: Workspace,
) -> None:
    scenario(
        ws,
        "srcdir",
        model_rule("direct", training_data='"datadir"')
        + 'filegroup(name = "dir_group", srcs = ["datadir"])\n'
        + model_rule("grouped", training_data='":dir_group"')
        + model_rule("globbed", training_data='":files"')
        + 'filegroup(name = "files", srcs = glob(["datadir/**"]))\n',
    )
    ws.write("srcdir/datadir/a.txt", "a\n")
    result = ws.build(
        "//srcdir:direct", "//srcdir:grouped", check=False, flags=("--keep_going",)
    )
    assert result.returncode != 0
    for name in ("direct", "grouped"):
        (line,) = [e for e in errors(result.stderr) if f"//srcdir:{name}:" in e]
        assert (
            "`training_data` includes srcdir/datadir, a directory of the source tree"
            in line
        )
        assert 'glob(["datadir/**"])' in line
        assert not ws.bin(f"srcdir/{name}.model").exists()

    # The fix the message gives tracks every file: adding one re-trains.
    assert ws.build("//srcdir:globbed").executed("DatabazelTrain") == 1
    ws.write("srcdir/datadir/b.txt", "b\n")
    assert ws.build("//srcdir:globbed").executed("DatabazelTrain") == 1
    assert "b.txt" in ws.bin("srcdir/globbed.model").read_text()


# --- 2. FIFOs and sockets among the outputs ----------------------------------------


def test_fifos_and_sockets_in_outputs_fail_fast_and_leave_nothing(
    ws: Workspace,
) -> None:
    cases = {
        "fifo": "plots/pipe: a FIFO (named pipe)",
        "fifo_metrics": "metrics.json: a FIFO (named pipe)",
        "socket": "sock: a Unix socket",
    }
    scenario(
        ws,
        "fifo",
        model_rule("m", training_data='"data.txt"')
        + model_rule(
            "fifo_model", training_data='"data.txt"', env='{"BEHAVIOUR": "fifo"}'
        )
        + "".join(evaluate_rule(f"e_{case}", case) for case in cases),
    )
    result = ws.bazel(
        "build",
        "--keep_going",
        "//fifo:all",
        timeout=300,  # before the fix this build never ended
    )
    assert result.returncode != 0
    for case, what in cases.items():
        (line,) = [e for e in errors(result.stderr) if f"//fifo:e_{case}:" in e]
        assert (
            f"left 1 entry in bazel-out/k8-fastbuild/bin/fifo/e_{case}.outputs" in line
        )
        assert what in line
        assert not ws.bin(f"fifo/e_{case}.metrics.json").exists()
        leftovers = [
            p
            for p in ws.bin(f"fifo/e_{case}.outputs").rglob("*")
            if not p.is_file() and not p.is_dir()
        ]
        assert leftovers == []
    (line,) = [e for e in errors(result.stderr) if "//fifo:fifo_model:" in e]
    assert "wrote a FIFO (named pipe) at" in line
    assert not ws.bin("fifo/fifo_model.model").exists()
    assert not ws.bin("fifo/fifo_model.model").is_symlink()


# --- 4. symbolic links as outputs ------------------------------------------------


def test_symlinked_outputs_are_rejected(ws: Workspace, tmp_path: Path) -> None:
    cases = {
        "link_host": "wrote a symbolic link (to /etc/passwd) at",
        "link_source": "wrote a symbolic link (to ",
        "dangling": "wrote a symbolic link (to /nonexistent/model, which does not exist) at",
    }
    scenario(
        ws,
        "symlinks",
        model_rule("m", training_data='"data.txt"')
        + "".join(
            model_rule(
                case, training_data='"data.txt"', env=f'{{"BEHAVIOUR": "{case}"}}'
            )
            + evaluate_rule(f"{case}_eval", "ok", model=f":{case}")
            for case in cases
        )
        + evaluate_rule("link_eval", "link"),
    )
    disk_cache = f"--disk_cache={tmp_path / 'disk_cache'}"
    result = ws.build("//symlinks:all", check=False, flags=("--keep_going", disk_cache))
    assert result.returncode != 0
    for case, message in cases.items():
        (line,) = [e for e in errors(result.stderr) if f"//symlinks:{case}:" in e]
        assert message in line, line
        assert "where a model file was expected; write the file itself" in line
        model = ws.bin(f"symlinks/{case}.model")
        assert not model.exists() and not model.is_symlink()
        metrics = ws.bin(f"symlinks/{case}_eval.metrics.json")
        assert not metrics.exists() and not metrics.is_symlink()
    (line,) = [e for e in errors(result.stderr) if "//symlinks:link_eval:" in e]
    assert "passwd: a symbolic link (to /etc/passwd)" in line
    assert not ws.bin("symlinks/link_eval.outputs/passwd").is_symlink()
    # Nothing of the host got into the cache: after a clean, the same failures.
    ws.bazel("clean", check=True)
    again = ws.build("//symlinks:link_host", check=False, flags=(disk_cache,))
    assert again.returncode != 0
    assert "wrote a symbolic link (to /etc/passwd)" in again.stderr


# --- 5. the target's env and the runner ---------------------------------------------


def test_the_targets_env_reaches_the_script_but_not_the_runner(ws: Workspace) -> None:
    shadow = ws.root / "envshadow" / "shadow"
    scenario(
        ws,
        "envshadow",
        model_rule(
            "pythonpath",
            training_data='"data.txt"',
            env=f'{{"PYTHONPATH": "{shadow}"}}',
        )
        + model_rule(
            "pythonhome",
            training_data='"data.txt"',
            env='{"PYTHONHOME": "/nonexistent"}',
        ),
    )
    # A module shadowing the standard library's json, which the runner imports.
    ws.write("envshadow/shadow/json.py", 'raise SystemExit("shadowed json imported")\n')
    ws.build("//envshadow:pythonpath")
    # The script gets it (after its own directory, which the runner puts first).
    model = ws.bin("envshadow/pythonpath.model").read_text()
    assert f"'PYTHONPATH': ['{shadow}']" in model, model

    # PYTHONHOME breaks a Python script started with it, but the runner stays
    # up and reports that as the script's failure.
    result = ws.build("//envshadow:pythonhome", check=False)
    assert result.returncode != 0
    (line,) = errors(result.stderr)
    assert (
        "//envshadow:pythonhome: train script envshadow/train.py exited with code 1"
        in line
    )
    assert "Fatal Python error" in result.stderr


# --- 6. what used to crash, or to give a traceback -------------------------------------

BAD_DECLARATIONS = [
    (
        model_rule("m", training_data='"data.txt"', env='{"X": "a\\0b"}'),
        "`env` value of X contains a NUL byte",
    ),
    (
        model_rule("m", training_data='"data.txt"', hyperparams='{"x": "a\\0b"}'),
        "hyperparameter x contains a NUL byte",
    ),
    (
        model_rule("m", training_data='"data.txt"', model_file='"../x.pkl"'),
        '`model_file` "../x.pkl" has an empty, `.` or `..` component',
    ),
    (
        model_rule("m", training_data='"data.txt"', model_file='"/tmp/x.pkl"'),
        '`model_file` "/tmp/x.pkl" is an absolute path',
    ),
    (
        model_rule("m", training_data='"data.txt"', model_file='"m.hyperparams.json"'),
        '`model_file` "m.hyperparams.json" ends with `.hyperparams.json`',
    ),
    (
        model_rule(
            "m", training_data='"data.txt"', hyperparams='{"big": "x" * 140000}'
        ),
        "the hyperparameters take 140010 bytes as the JSON of --hyperparams, over "
        "Linux's limit of 131072 bytes for one command-line argument (MAX_ARG_STRLEN); "
        "the longest is big (140000 bytes)",
    ),
]


@pytest.mark.parametrize(
    ("build", "message"), BAD_DECLARATIONS, ids=[m[:30] for _, m in BAD_DECLARATIONS]
)
def test_declarations_that_crashed_fail_at_analysis_naming_the_target(
    ws: Workspace, build: str, message: str
) -> None:
    scenario(ws, "crashes", build)
    server = int(ws.bazel("info", "server_pid", check=True).stdout)
    result = ws.build("//crashes:m", check=False)
    assert result.returncode == 1, result.stderr[-2000:]  # not 37: the server lives
    assert result.executed("DatabazelTrain") == 0
    assert f"Error in fail: //crashes:m: {message}" in result.stderr, result.stderr[
        -2000:
    ]
    assert ws.server_pid() == server


def test_two_models_naming_one_file_is_bazels_conflict_naming_both(
    ws: Workspace,
) -> None:
    scenario(
        ws,
        "samefile",
        model_rule("a", training_data='"data.txt"', model_file='"same.pkl"')
        + model_rule("b", training_data='"data.txt"', model_file='"same.pkl"'),
    )
    result = ws.build("//samefile:all", check=False)
    assert result.returncode != 0
    # Bazel stops at the first conflict it checks: the model file's, or that of
    # its lineage card (named after it), which one varies from run to run.
    assert re.search(
        r"ERROR: file 'samefile/same\.pkl(\.card\.json)?' is generated by these "
        r"conflicting actions:\nLabel: (//samefile:b, //samefile:a|//samefile:a, "
        r"//samefile:b)\n",
        result.stderr,
    ), result.stderr[-3000:]


METRICS = {
    "huge_int": "not valid JSON: Exceeds the limit (4300 digits) for integer string conversion",
    "big_int": 'metric "n" is an integer of 401 digits, too large for a floating-point number',
    "deep": "not valid JSON: nested too deeply",
}


def test_hostile_metrics_and_a_killed_runner_give_named_errors(ws: Workspace) -> None:
    scenario(
        ws,
        "badmetrics",
        model_rule("m", training_data='"data.txt"')
        + "".join(evaluate_rule(case, case) for case in METRICS)
        + evaluate_rule("exploded", "exit5")
        + model_rule(
            "killer", training_data='"data.txt"', env='{"BEHAVIOUR": "kill_parent"}'
        ),
    )
    result = ws.build("//badmetrics:all", check=False, flags=("--keep_going",))
    assert result.returncode != 0
    assert "internal error" not in result.stderr
    for case, message in METRICS.items():
        (line,) = [e for e in errors(result.stderr) if f"//badmetrics:{case}:" in e]
        assert message in line
        assert not ws.bin(f"badmetrics/{case}.metrics.json").exists()
    # In a warm worker (the default) the script is the second process of a
    # PID namespace of its own: its parent is the namespace's init, which
    # ignores the signal, and its runner is out of reach.
    (line,) = [e for e in errors(result.stderr) if "//badmetrics:killer:" in e]
    assert "train script badmetrics/train.py exited with code 1" in line
    assert "the script's parent survived SIGKILL" in result.stderr
    assert not ws.bin("badmetrics/killer.model").exists()
    # Sandboxed, it kills its runner, and the guard says so.
    sandboxed = ws.build("//badmetrics:killer", check=False, flags=SANDBOXED)
    (line,) = [e for e in errors(sandboxed.stderr) if "//badmetrics:killer:" in e]
    assert (
        "the databazel runner was killed by signal SIGKILL while it ran the train script"
        in line
    )
    assert not ws.bin("badmetrics/killer.model").exists()
    # Bazel's own line for a failed evaluation names the evaluate target.
    assert (
        "Evaluating //badmetrics:exploded: model //badmetrics:m failed" in result.stderr
    )


# --- 3. who may write to a cache ----------------------------------------------------


def http(method: str, url: str, credentials: str = "") -> int:
    """The status of an HTTP request (a PUT sends a few bytes)."""
    request = urllib.request.Request(
        url, data=b"planted" if method == "PUT" else None, method=method
    )
    if credentials:
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture()
def cache_state() -> Iterator[Path]:
    # Directly under /tmp: nginx's worker user must reach the store.
    state = Path(tempfile.mkdtemp(prefix="databazel-authcache-", dir="/tmp"))
    try:
        yield state
    finally:
        tool("cache_server.sh", "stop", str(state))
        shutil.rmtree(state, ignore_errors=True)


@needs_server("nginx")
def test_a_cache_requiring_credentials_refuses_anonymous_writes(
    ws: Workspace, cache_state: Path
) -> None:
    (cache_state / "writers").write_text("ci:s3cret-w\n")
    (cache_state / "readers").write_text("dev:s3cret-r\n")
    said = []

    def start(port: int) -> subprocess.CompletedProcess[str]:
        started = tool(
            "cache_server.sh",
            "start",
            "--writers",
            str(cache_state / "writers"),
            str(cache_state),
            str(port),
        )
        said.append(started.stdout)
        return started

    port = start_on_a_free_port(start)
    assert "writes need credentials" in said[-1]
    url = f"http://127.0.0.1:{port}"
    blob = f"{url}/cas/{'0' * 64}"
    assert http("PUT", blob) == 401
    assert http("PUT", blob, "ci:wrong") == 401
    assert http("PUT", blob, "dev:s3cret-r") == 401
    assert http("GET", blob) == 404  # reads stay open
    store = cache_state / "store"
    assert not list(store.rglob("*"))

    scenario(ws, "authcache", model_rule("m", training_data='"data.txt"'))
    # A developer without credentials: the build works, its uploads are refused.
    anonymous = ws.build("//authcache:m", flags=(f"--remote_cache={url}",))
    assert anonymous.executed("DatabazelTrain") == 1
    assert "WARNING: Writing to Remote Cache" in anonymous.stderr
    assert not [p for p in store.rglob("*") if p.is_file()]

    # CI with the writers' credentials fills the cache ...
    ws.bazel("clean", check=True)
    ci = ws.build(
        "//authcache:m", flags=(f"--remote_cache=http://ci:s3cret-w@127.0.0.1:{port}",)
    )
    assert ci.executed("DatabazelTrain") == 1
    assert "Remote Cache" not in ci.stderr
    assert list((store / "ac").iterdir())

    # ... which developers read without uploading anything.
    ws.bazel("clean", check=True)
    reader = ws.build(
        "//authcache:m",
        flags=(f"--remote_cache={url}", "--noremote_upload_local_results"),
    )
    assert reader.executed("DatabazelTrain") == 0
    assert "WARNING" not in reader.stderr

    # Reads can need credentials too.
    assert tool("cache_server.sh", "stop", str(cache_state)).returncode == 0
    port = start_on_a_free_port(
        lambda port: tool(
            "cache_server.sh",
            "start",
            "--writers",
            str(cache_state / "writers"),
            "--readers",
            str(cache_state / "readers"),
            str(cache_state),
            str(port),
        )
    )
    url = f"http://127.0.0.1:{port}"
    blob = f"{url}/cas/{'0' * 64}"
    entry = f"{url}/ac/{next((store / 'ac').iterdir()).name}"
    assert http("GET", entry) == 401
    assert http("GET", entry, "dev:s3cret-r") == 200
    assert http("GET", entry, "ci:s3cret-w") == 200
    assert http("PUT", blob, "dev:s3cret-r") == 401
    assert http("PUT", blob, "ci:s3cret-w") in (201, 204)


# Run by the other user: a cache server's state directory, made first, with
# everything a root-run server would trust in it.
PLANT_CACHE_STATE = """
import os, sys
state, target, pid = sys.argv[1:]
os.mkdir(state); os.chmod(state, 0o777)
os.symlink(target, state + "/nginx.conf")  # root's nginx would write its configuration there
with open(state + "/nginx.pid", "w") as f:
    f.write(pid)  # an unrelated process of root's
for sub in ("store", "store/ac", "store/cas"):
    os.mkdir(state + "/" + sub); os.chmod(state + "/" + sub, 0o777)
open(state + "/store/cas/" + "1" * 64, "w").write("a planted model")
open(state + "/store/ac/" + "2" * 64, "w").write("an entry pointing at it")
"""


@needs_root
@needs_server("nginx")
def test_a_cache_state_another_user_prepared_is_refused_and_stop_kills_only_ours(
    tmp_path: Path,
) -> None:
    precious = tmp_path / "precious.conf"
    precious.write_text("root's own file\n")
    bystander = subprocess.Popen(["sleep", "600"])
    with other_user.shared_tmp() as tmp:
        state = tmp / "cache"
        try:
            planted_cache_state(tmp_path, state, precious, bystander)
        finally:
            tool("cache_server.sh", "stop", str(state))
            bystander.kill()
            bystander.wait()


def planted_cache_state(
    tmp_path: Path, state: Path, precious: Path, bystander: subprocess.Popen[bytes]
) -> None:
    other_user.python(PLANT_CACHE_STATE, str(state), str(precious), str(bystander.pid))
    writers = tmp_path / "writers"
    writers.write_text("ci:s3cret-w\n")

    def start() -> subprocess.CompletedProcess[str]:
        with socket.socket() as s:  # a port it would take if it started
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return tool(
            "cache_server.sh", "start", "--writers", str(writers), str(state), str(port)
        )

    def refused(why: str) -> None:
        started = start()
        assert (started.returncode, started.stdout) == (1, ""), started
        assert started.stderr == (
            f"cache_server.sh: STATE_DIR {state} is not safe to use: {why}; another "
            "user could change what the server serves or runs. Use a new directory of "
            "your own (it is made with the right modes), or remove this one\n"
        )
        assert (
            precious.read_text() == "root's own file\n"
        )  # never written through the link

    other = f"uid {OTHER_UID}"
    refused(f"it is owned by {other}, not by you")
    # `stop` does not trust the planted pid file: the bystander lives on.
    stopped = tool("cache_server.sh", "stop", str(state))
    assert stopped.returncode == 0
    assert stopped.stdout == f"cache_server.sh: not running in {state}\n"
    assert f"{state}/nginx.pid is not a file of yours; not trusted" in stopped.stderr
    assert bystander.poll() is None

    # Root takes the directory over (as if root had made it and left it open):
    # what the other user planted in it is still refused, one thing at a time.
    os.chown(state, 0, 0)
    state.chmod(0o755)
    refused(f"{state}/nginx.conf is a symbolic link")
    (state / "nginx.conf").unlink()
    refused(f"{state}/nginx.pid is owned by {other}")
    pidfile = state / "nginx.pid"
    pidfile.unlink()
    pidfile.write_text(
        f"{bystander.pid}\n"
    )  # root's own pid file, naming the bystander
    refused(f"{state}/store is owned by {other}")
    shutil.rmtree(state / "store")

    # Clean: it starts (the stale pid file is no server of this state) ...
    port = start_on_a_free_port(
        lambda port: tool("cache_server.sh", "start", str(state), str(port))
    )
    assert http("PUT", f"http://127.0.0.1:{port}/cas/{'3' * 64}") in (201, 204)
    # ... and the store is the server's alone: no local user reads a blob.
    (blob,) = (state / "store" / "cas").iterdir()
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "store").stat().st_mode) == 0o700
    peek = other_user.run(
        other_user.PYTHON, "-c", "open(__import__('sys').argv[1]).read()", str(blob),
        check=False,
    )  # fmt: skip
    assert "PermissionError" in peek.stderr, peek
    assert tool("cache_server.sh", "stop", str(state)).returncode == 0
    assert bystander.poll() is None


@needs_root
def test_buildgrid_refuses_a_planted_state_and_stops_only_its_own_processes(
    tmp_path: Path,
) -> None:
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        with other_user.shared_tmp() as tmp:
            state = tmp / "grid"
            other_user.python(
                "import os, sys\n"
                "os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o777)\n"
                "for name in ('bgd.pid', 'worker-1.pid'):\n"
                "    open(sys.argv[1] + '/' + name, 'w').write(sys.argv[2])\n",
                str(state),
                str(bystander.pid),
            )
            stopped = tool("buildgrid.sh", "stop", str(state))
            assert stopped.returncode == 0, stopped
            assert bystander.poll() is None
            if missing_server("buildgrid") is None:
                started = tool("buildgrid.sh", "start", str(state), "50999", "1")
                assert started.returncode == 1
                assert started.stderr.startswith(
                    f"buildgrid.sh: STATE_DIR {state} is not safe to use: it is owned by "
                    f"uid {OTHER_UID}, not by you;"
                ), started.stderr
                assert not (state / "bgd.yml").exists()
            # Root's own state, whose pid files name a process that is no server of it.
            mine = tmp_path / "grid"
            mine.mkdir(mode=0o700)
            (mine / "bgd.pid").write_text(f"{bystander.pid}\n")
            stopped = tool("buildgrid.sh", "stop", str(mine))
            assert stopped.returncode == 0, stopped
            assert (
                f"pid {bystander.pid} of {mine}/bgd.pid is not this server"
                in stopped.stderr
            )
            assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_verify_cache_removes_a_corrupted_blob_so_the_next_build_replaces_it(
    ws: Workspace, tmp_path: Path
) -> None:
    scenario(ws, "corrupt", model_rule("m", training_data='"data.txt"'))
    disk_cache = f"--disk_cache={tmp_path / 'disk_cache'}"
    ws.build("//corrupt:m", flags=(disk_cache,))
    digest = hashlib.sha256(ws.bin("corrupt/m.model").read_bytes()).hexdigest()
    (blob,) = (tmp_path / "disk_cache").rglob(digest)
    blob.chmod(0o644)
    blob.write_text("truncat")
    # Bazel catches the corruption and re-trains, but never replaces the blob.
    for _ in range(2):
        ws.bazel("clean", check=True)
        assert (
            ws.build("//corrupt:m", flags=(disk_cache,)).executed("DatabazelTrain") == 1
        )
        assert blob.read_text() == "truncat"
    verified = tool("verify_cache.py", str(tmp_path / "disk_cache"))
    assert verified.returncode == 1
    assert f"removed: {blob}" in verified.stdout
    ws.bazel("clean", check=True)
    assert ws.build("//corrupt:m", flags=(disk_cache,)).executed("DatabazelTrain") == 1
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest
    ws.bazel("clean", check=True)
    assert ws.build("//corrupt:m", flags=(disk_cache,)).executed("DatabazelTrain") == 0
    assert tool("verify_cache.py", str(tmp_path / "disk_cache")).returncode == 0


# --- 7. what a trial can reach --------------------------------------------------------

# Tries the network and files outside its inputs; records what happened.
PROBE = """
import argparse, os, socket
p = argparse.ArgumentParser()
p.add_argument("--data")
p.add_argument("--model-output-path")
p.add_argument("--hyperparams")
a = p.parse_args()
seen = {}
def attempt(name, action):
    try:
        seen[name] = action()
    except OSError as e:
        seen[name] = "error: " + (e.strerror or type(e).__name__)
def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()
def connect():
    socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=5).close()
    return "connected"
attempt("tcp", connect)
attempt("secret", lambda: read(os.environ["SECRET"]))
sibling = os.path.join(os.path.dirname(os.path.realpath(a.data)), "undeclared.txt")
attempt("sibling", lambda: read(sibling))
with open(a.model_output_path, "w", encoding="utf-8") as f:
    f.write(repr(seen))
"""


@pytest.fixture()
def host_server() -> Iterator[int]:
    """A TCP server on the host's loopback that accepts every connection."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                server.accept()[0].close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def test_the_sandbox_blocks_the_network_unless_allowed_and_files_on_request(
    ws: Workspace, host_server: int, tmp_path: Path
) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("hunter2")
    env = f'{{"PORT": "{host_server}", "SECRET": "{secret}"}}'
    ws.write("sandbox/train.py", PROBE)
    ws.write("sandbox/evaluate.py", EVALUATE)
    ws.write("sandbox/data.txt", "x\n")
    ws.write("sandbox/undeclared.txt", "not an input\n")
    ws.write(
        "sandbox/BUILD",
        LOAD
        + model_rule("closed", training_data='"data.txt"', env=env)
        + model_rule("open", training_data='"data.txt"', env=env, network="True")
        + model_rule(
            "blocked",
            training_data='"data.txt"',
            env=env[:-1] + ', "RUN": "blocked"}',
        )
        + f"""
hyperparam_search(
    name = "search",
    env = {env},
    eval_executable = "evaluate.py",
    grid = {{"x": ["1"]}},
    metric = "accuracy",
    network = True,
    test_data = "data.txt",
    train_executable = "train.py",
    training_data = "data.txt",
)
""",
    )
    ws.build("//sandbox:closed", "//sandbox:open", "//sandbox:search")
    closed = ws.bin("sandbox/closed.model").read_text()
    opened = ws.bin("sandbox/open.model").read_text()
    # Default: no network, not even the host's loopback; network = True: as the host.
    assert "'tcp': 'error: Connection refused'" in closed
    assert "'tcp': 'connected'" in opened
    assert "'tcp': 'connected'" in ws.bin("sandbox/search__x-1.model").read_text()
    # Files: the host's file system is visible, read-only (docs/reliability.md):
    # a trial that goes looking reads undeclared files ...
    assert "'secret': 'hunter2'" in closed
    assert "'sibling': 'not an input\\n'" in closed
    # ... unless they are blocked, in Bazel's sandbox (a flag of its own,
    # which warm workers do not read: docs/reliability.md).
    ws.build("//sandbox:blocked", flags=(f"--sandbox_block_path={secret}", *SANDBOXED))
    assert "'secret': ''" in ws.bin("sandbox/blocked.model").read_text()
