"""Tests for databazel/private/runner.py, running real tiny scripts."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import contract
import pytest
import records
import runner
import process
from test_contract import MALFORMED

# `python3 tool.py runner ARGS`, as the actions start it.
RUNNER = (str(Path(runner.__file__).resolve().parent / "tool.py"), "runner")
TARGET = "//pkg:model"

# A Python training script that records what it received in the model file.
RECORD_ARGV = """
import json, sys
argv = sys.argv[1:]
out = argv[argv.index("--model-output-path") + 1]
with open(out, "w", encoding="utf-8") as f:
    json.dump(argv, f, ensure_ascii=False)
"""


def write_py(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def write_sh(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake execroot: cwd with a data file and a hyperparameters file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("x,y\n1,2\n", encoding="utf-8")
    (tmp_path / "hp.json").write_text(
        '{"C": "0.1", "max_iter": "100"}', encoding="utf-8"
    )
    return tmp_path


def train(script: Path | str, *extra: str, python: bool = True) -> list[str]:
    argv = [
        "train",
        "--target",
        TARGET,
        "--hyperparams-file",
        "hp.json",
        "--model-output-path",
        "out/model.bin",
        "--script",
        str(script),
    ]
    if "--data" not in extra:
        argv += ["--data", "data.csv"]
    return argv + (["--python-script"] if python else []) + list(extra)


def evaluate(script: Path | str, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--target",
        TARGET,
        "--model-path",
        "model.bin",
        "--data",
        "data.csv",
        "--metrics-output",
        "out/eval.metrics.json",
        "--output-dir",
        "out/eval_dir",
        "--script",
        str(script),
        "--python-script",
        *extra,
    ]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = runner.run(argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def assert_error(err: str, *fragments: str) -> None:
    assert err.startswith(f"databazel: error: {TARGET}: "), err
    # The runner itself never shows a traceback (the script's stderr tail may).
    assert "Traceback" not in err.split("Last lines of its", 1)[0]
    for fragment in fragments:
        assert fragment in err


# --- train -----------------------------------------------------------------


def test_train_success_writes_model_and_prints_nothing(work: Path, capsys) -> None:
    script = write_py(work, "train.py", RECORD_ARGV)
    code, err = run_main(train(script.name), capsys)
    assert (code, err) == (0, "")
    argv = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    assert argv == [
        "--data",
        "data.csv",
        "--model-output-path",
        "out/model.bin",
        "--hyperparams",
        '{"C":"0.1","max_iter":"100"}',
    ]


def test_train_epochs_pass_the_epoch_and_the_previous_checkpoint(
    work: Path, capsys
) -> None:
    script = write_py(work, "train.py", RECORD_ARGV)
    (work / "prev.bin").write_text("previous checkpoint", encoding="utf-8")
    code, err = run_main(
        train(script.name, "--epoch", "2", "--init-model-path", "prev.bin"), capsys
    )
    assert (code, err) == (0, "")
    argv = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    assert argv[-4:] == ["--epoch", "2", "--init-model-path", "prev.bin"]
    code, err = run_main(train(script.name, "--epoch", "1"), capsys)
    assert (code, err) == (0, "")
    argv = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    assert argv[-2:] == ["--epoch", "1"] and "--init-model-path" not in argv


def test_train_epoch_after_a_failed_epoch_passes_its_record_on(
    work: Path, capsys
) -> None:
    script = write_py(work, "train.py", RECORD_ARGV)
    record = records.failure_record(
        "train", "//pkg:m", contract.ScriptFailed("exploded", 3, "tail")
    )
    (work / "prev.bin").write_bytes(
        records.FAILED_MODEL_HEADER + records.format_failure(record).encode()
    )
    argv = train(script.name, "--epoch", "2", "--init-model-path", "prev.bin")
    code, err = run_main(argv, capsys)
    assert code == 1
    assert_error(err, "the checkpoint prev.bin is the failure record of //pkg:m")
    code, err = run_main(argv + ["--allow-failure"], capsys)
    assert code == 0
    assert records.read_failed_model(str(work / "out/model.bin")) == record


# --- early stopping: --decision ----------------------------------------------


def test_a_stop_decision_writes_the_record_and_runs_no_script(
    work: Path, capsys
) -> None:
    script = write_sh(work, "train.sh", "touch ran\nexit 1\n")
    stop = records.stop_record(3, "//pkg:s__rung-1")
    (work / "decision.json").write_text(records.format_record(stop))
    (work / "prev.bin").write_text("a checkpoint", encoding="utf-8")
    argv = train(script.name, "--epoch", "4", "--init-model-path", "prev.bin")
    code, err = run_main(argv + ["--decision", "decision.json"], capsys)
    assert (code, err) == (0, "")
    assert not (work / "ran").exists()
    assert records.read_stopped_model(str(work / "out/model.bin")) == stop
    # The next epoch of the stopped trial: its checkpoint is the record.
    (work / "model.bin").write_bytes((work / "out/model.bin").read_bytes())
    code, err = run_main(evaluate(script.name, "--decision", "decision.json"), capsys)
    assert (code, err) == (0, "")
    assert not (work / "ran").exists()
    metrics = (work / "out/eval.metrics.json").read_text()
    assert records.parse_evaluation(metrics)["stop"] == stop


def test_a_promoted_epoch_on_a_stopped_checkpoint_is_an_error(
    work: Path, capsys
) -> None:
    script = write_py(work, "train.py", RECORD_ARGV)
    (work / "decision.json").write_text(records.format_record(records.PROMOTED))
    stop = records.stop_record(1, "//pkg:s__rung-0")
    (work / "prev.bin").write_text(
        records.STOPPED_MODEL_HEADER.decode() + records.format_record(stop)
    )
    argv = train(script.name, "--epoch", "2", "--init-model-path", "prev.bin")
    code, err = run_main(argv + ["--decision", "decision.json"], capsys)
    assert code == 1
    assert_error(err, "is of a trial that early stopping stopped")
    assert not (work / "out/model.bin").exists()
    # Promoted and a real checkpoint: the script runs as without --decision.
    (work / "prev.bin").write_text("a checkpoint", encoding="utf-8")
    code, err = run_main(argv + ["--decision", "decision.json"], capsys)
    assert (code, err) == (0, "")
    assert json.loads((work / "out/model.bin").read_text())[-1] == "prev.bin"


HOSTILE = {
    "cmd": "a b; $(touch {tmp}/pwned)",
    "tick": "`touch {tmp}/pwned2` && echo hi > {tmp}/pwned3",
    "quotes": 'it\'s "quoted" \\ back\\slash',
    "newline": "line1\nline2\r\n\ttab",
    "unicode": "héllo ✓ 日本語 \U0001f600",
    "glob": "* ? [a-z] ~ $HOME ${{PATH}} | > <",
    "empty": "",
}


def hostile_hyperparams(tmp: Path) -> dict[str, str]:
    return {k: v.format(tmp=tmp) for k, v in HOSTILE.items()}


def assert_not_pwned(tmp: Path) -> None:
    for name in ("pwned", "pwned2", "pwned3"):
        assert not (tmp / name).exists()


def test_hyperparams_with_shell_metacharacters_arrive_verbatim(
    work: Path, capsys
) -> None:
    hp = hostile_hyperparams(work)
    (work / "hp.json").write_text(json.dumps(hp), encoding="utf-8")
    script = write_py(work, "train.py", RECORD_ARGV)
    code, err = run_main(train(script.name), capsys)
    assert (code, err) == (0, "")
    argv = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    assert len(argv) == 6
    assert argv[4] == "--hyperparams"
    assert argv[5] == json.dumps(
        hp, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert json.loads(argv[5]) == hp
    assert_not_pwned(work)


def test_hyperparams_reach_executable_sh_script_byte_for_byte(
    work: Path, capsys
) -> None:
    hp = hostile_hyperparams(work)
    (work / "hp.json").write_text(json.dumps(hp), encoding="utf-8")
    # $4 is the model output path, $6 the hyperparameters JSON.
    script = write_sh(work, "train.sh", """printf '%s' "$6" > "$4"\n""")
    code, err = run_main(train(script.name, python=False), capsys)
    assert (code, err) == (0, "")
    expected = json.dumps(hp, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert (work / "out/model.bin").read_bytes() == expected.encode("utf-8")
    assert_not_pwned(work)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"C": 0.1}', 'hyperparameter "C" has a number (0.1) value'),
        ('["C"]', "expected a JSON object of strings, found a list"),
        ("{oops", "not valid JSON"),
        ('{"C": "1", "C": "2"}', 'duplicate key "C"'),
    ],
)
def test_invalid_hyperparams_file(
    work: Path, capsys, content: str, fragment: str
) -> None:
    (work / "hp.json").write_text(content, encoding="utf-8")
    script = write_py(work, "train.py", RECORD_ARGV)
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, "invalid hyperparameters file hp.json", fragment)
    assert not (work / "out/model.bin").exists()


def test_nonzero_exit_reports_code_and_stderr_tail(work: Path, capsys) -> None:
    script = write_py(
        work,
        "train.py",
        """
        import sys
        print("some progress")
        print("ValueError: bad learning rate", file=sys.stderr)
        sys.exit(3)
        """,
    )
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, "train script train.py exited with code 3\n")
    assert err.endswith(
        "Last lines of its stderr:\n    ValueError: bad learning rate\n"
    )
    assert "some progress" not in err


def test_stderr_tail_is_the_last_20_lines(work: Path, capsys) -> None:
    script = write_py(
        work,
        "train.py",
        """
        import sys
        for i in range(1000):
            print(f"stderr line {i}", file=sys.stderr)
        sys.exit(1)
        """,
    )
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    shown = err.split("Last lines of its stderr:\n", 1)[1].splitlines()
    assert shown == [f"    stderr line {i}" for i in range(980, 1000)]


def test_megabytes_of_output_give_a_bounded_message(work: Path, capsys) -> None:
    script = write_py(
        work,
        "train.py",
        """
        import sys
        for i in range(1000):
            sys.stdout.write("o" * 5000 + "\\n")
            sys.stderr.write(f"{i} " + "e" * 3000 + "\\n")
        sys.stderr.write("final words\\n")
        sys.exit(2)
        """,
    )
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, "exited with code 2", "    final words")
    assert len(err.encode()) < 9 * 1024
    assert "o" * 100 not in err


def test_empty_stderr_is_said(work: Path, capsys) -> None:
    script = write_py(
        work, "train.py", "import sys\nprint('only stdout')\nsys.exit(4)\n"
    )
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, "exited with code 4", "(its stderr was empty)", "only stdout")


def test_killed_by_signal(work: Path, capsys) -> None:
    script = write_py(
        work, "train.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, "train script train.py was killed by signal SIGKILL")


def test_exit_zero_without_model(work: Path, capsys) -> None:
    script = write_py(work, "train.py", "print('forgot to save')\n")
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(
        err,
        "train script train.py exited 0 but wrote no model at out/model.bin; "
        "the script must write the model file to the path given by --model-output-path",
    )


def test_directory_instead_of_model_file(work: Path, capsys) -> None:
    script = write_py(
        work,
        "train.py",
        """
        import os, sys
        out = sys.argv[sys.argv.index("--model-output-path") + 1]
        os.makedirs(out)
        open(os.path.join(out, "weights.bin"), "w").close()
        """,
    )
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(
        err, "wrote a directory at out/model.bin where a model file was expected"
    )
    assert not os.path.lexists(work / "out/model.bin")


def test_model_written_then_crash_removes_output(work: Path, capsys) -> None:
    script = write_py(
        work,
        "train.py",
        """
        import sys
        out = sys.argv[sys.argv.index("--model-output-path") + 1]
        open(out, "w").write("half a model")
        raise RuntimeError("out of memory")
        """,
    )
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, "exited with code 1", "RuntimeError: out of memory")
    assert not (work / "out/model.bin").exists()


def test_stale_model_does_not_count_as_output(work: Path, capsys) -> None:
    (work / "out").mkdir()
    (work / "out/model.bin").write_text("stale", encoding="utf-8")
    script = write_py(work, "train.py", "pass\n")
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, "wrote no model at out/model.bin")
    assert not (work / "out/model.bin").exists()


def test_multiple_data_paths_become_a_directory_of_symlinks(work: Path, capsys) -> None:
    files = {
        "datasets/mnist/train/images.csv": "train images",
        "datasets/mnist/test/images.csv": "test images",
        "datasets/mnist/test/extra/labels.csv": "test labels",
    }
    for rel, content in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(content, encoding="utf-8")
    script = write_py(
        work,
        "train.py",
        """
        import json, os, sys
        argv = sys.argv[1:]
        data = argv[argv.index("--data") + 1]
        found = {}
        for root, dirs, names in os.walk(data):
            for name in names:
                path = os.path.join(root, name)
                found[os.path.relpath(path, data)] = {
                    "link": os.readlink(path) if os.path.islink(path) else None,
                    "content": open(path).read(),
                }
        out = argv[argv.index("--model-output-path") + 1]
        json.dump({"data": data, "found": found}, open(out, "w"))
        """,
    )
    data_args: list[str] = []
    for rel in files:
        data_args += ["--data", rel]
    code, err = run_main(train(script.name, *data_args), capsys)
    assert (code, err) == (0, "")
    result = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    # The same relative path on every run and machine, beside the output, with
    # relative links: a script that records its arguments writes the same bytes.
    assert result["data"] == "out/model.bin.databazel-data"
    assert result["found"] == {
        "train/images.csv": {
            "link": "../../../datasets/mnist/train/images.csv",
            "content": "train images",
        },
        "test/images.csv": {
            "link": "../../../datasets/mnist/test/images.csv",
            "content": "test images",
        },
        "test/extra/labels.csv": {
            "link": "../../../../datasets/mnist/test/extra/labels.csv",
            "content": "test labels",
        },
    }
    assert not os.path.lexists(work / result["data"]), (
        "the data directory must be removed"
    )


def test_files_in_one_directory_are_linked_flat(work: Path, capsys) -> None:
    (work / "d").mkdir()
    (work / "d/a.csv").write_text("a", encoding="utf-8")
    (work / "d/b.csv").write_text("b", encoding="utf-8")
    script = write_py(
        work,
        "train.py",
        """
        import os, sys
        argv = sys.argv[1:]
        data = argv[argv.index("--data") + 1]
        out = argv[argv.index("--model-output-path") + 1]
        open(out, "w").write(",".join(sorted(os.listdir(data))))
        """,
    )
    code, _ = run_main(
        train(script.name, "--data", "d/a.csv", "--data", "d/b.csv"), capsys
    )
    assert code == 0
    assert (work / "out/model.bin").read_text(encoding="utf-8") == "a.csv,b.csv"


def test_missing_data_path(work: Path, capsys) -> None:
    script = write_py(work, "train.py", RECORD_ARGV)
    code, err = run_main(train(script.name, "--data", "nope.csv"), capsys)
    assert code == 1
    assert_error(err, "data path nope.csv does not exist")


def test_pythonpath_dirs_are_prepended_in_order(
    work: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for lib, value in (("lib1", "first"), ("lib2", "second")):
        (work / lib).mkdir()
        (work / lib / "shadowed.py").write_text(
            f"VALUE = {value!r}\n", encoding="utf-8"
        )
    (work / "lib2" / "helper.py").write_text("def greet():\n    return 'hi'\n", "utf-8")
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    monkeypatch.setenv("DATABAZEL_TEST_MARKER", "kept")
    script = write_py(
        work,
        "train.py",
        """
        import json, os, sys
        import helper, shadowed
        out = sys.argv[sys.argv.index("--model-output-path") + 1]
        json.dump({
            "greet": helper.greet(),
            "shadowed": shadowed.VALUE,
            "PYTHONPATH": os.environ["PYTHONPATH"],
            "marker": os.environ.get("DATABAZEL_TEST_MARKER"),
        }, open(out, "w"))
        """,
    )
    argv = train(script.name, "--pythonpath", "lib1", "--pythonpath", "lib2")
    code, err = run_main(argv, capsys)
    assert (code, err) == (0, "")
    result = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    assert result == {
        "greet": "hi",
        "shadowed": "first",
        # The script's own directory (unresolved) comes first; see run_script.
        "PYTHONPATH": os.pathsep.join(
            [str(work), str(work / "lib1"), str(work / "lib2"), "/already/there"]
        ),
        "marker": "kept",
    }


def test_script_not_found(work: Path, capsys) -> None:
    code, err = run_main(train("missing/train.py"), capsys)
    assert code == 1
    assert_error(err, "train script missing/train.py does not exist")


def test_script_not_executable(work: Path, capsys) -> None:
    (work / "train.sh").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    code, err = run_main(train("train.sh", python=False), capsys)
    assert code == 1
    assert_error(err, "train script train.sh is not executable")


def test_script_with_broken_interpreter(work: Path, capsys) -> None:
    script = work / "train.sh"
    script.write_text("#!/no/such/interpreter\n", encoding="utf-8")
    script.chmod(0o755)
    code, err = run_main(train("train.sh", python=False), capsys)
    assert code == 1
    assert_error(err, "cannot run train script train.sh")
    assert "\n" not in err.rstrip("\n")


# --- evaluate ----------------------------------------------------------------

CANONICAL = '{\n  "accuracy": 0.975,\n  "examples": 10000,\n  "loss": -1.5e-07\n}\n'


def test_evaluate_success_writes_canonical_metrics(work: Path, capsys) -> None:
    (work / "model.bin").write_text("model", encoding="utf-8")
    script = write_py(
        work,
        "eval.py",
        """
        import json, os, sys
        argv = sys.argv[1:]
        out_dir = argv[argv.index("--output-dir") + 1]
        with open(os.path.join(out_dir, "args.json"), "w") as f:
            json.dump(argv, f)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            f.write('{"loss": -1.5E-7, "accuracy": 0.9750, "examples": 10000}')
        """,
    )
    code, err = run_main(evaluate(script.name), capsys)
    assert (code, err) == (0, "")
    assert (work / "out/eval.metrics.json").read_text(encoding="utf-8") == CANONICAL
    assert json.loads(
        (work / "out/eval_dir/args.json").read_text(encoding="utf-8")
    ) == [
        "--model-path",
        "model.bin",
        "--data-path",
        "data.csv",
        "--output-dir",
        "out/eval_dir",
    ]
    leftovers = [p for p in os.listdir(work / "out") if p.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_evaluate_rejects_malformed_metrics(
    work: Path, capsys, text: str, message: str
) -> None:
    (work / "out").mkdir()
    (work / "out/eval.metrics.json").write_text("stale", encoding="utf-8")
    script = write_py(
        work,
        "eval.py",
        f"""
        import os, sys
        out_dir = sys.argv[sys.argv.index("--output-dir") + 1]
        open(os.path.join(out_dir, "metrics.json"), "w").write({text!r})
        """,
    )
    code, err = run_main(evaluate(script.name), capsys)
    assert code == 1
    assert_error(
        err,
        "evaluate script eval.py wrote an invalid out/eval_dir/metrics.json: ",
        message,
    )
    assert not (work / "out/eval.metrics.json").exists()


def test_missing_metrics_json_lists_directory(work: Path, capsys) -> None:
    script = write_py(
        work,
        "eval.py",
        """
        import os, sys
        out_dir = sys.argv[sys.argv.index("--output-dir") + 1]
        for name in ["metrics.txt", "predictions.csv"] + [f"f{i:02}" for i in range(12)]:
            open(os.path.join(out_dir, name), "w").close()
        """,
    )
    code, err = run_main(evaluate(script.name), capsys)
    assert code == 1
    assert_error(
        err,
        "evaluate script eval.py exited 0 but wrote no metrics.json in out/eval_dir "
        "(it contains: f00, f01, f02, f03, f04, f05, f06, f07, f08, f09 (and 4 more))",
    )
    assert not (work / "out/eval.metrics.json").exists()


def test_missing_metrics_json_in_empty_directory(work: Path, capsys) -> None:
    script = write_py(work, "eval.py", "pass\n")
    code, err = run_main(evaluate(script.name), capsys)
    assert code == 1
    assert_error(err, "wrote no metrics.json in out/eval_dir (the directory is empty)")


def test_stale_metrics_json_in_output_dir_is_not_reused(work: Path, capsys) -> None:
    (work / "out/eval_dir").mkdir(parents=True)
    (work / "out/eval_dir/metrics.json").write_text('{"a": 1}', encoding="utf-8")
    script = write_py(work, "eval.py", "pass\n")
    code, err = run_main(evaluate(script.name), capsys)
    assert code == 1
    assert_error(err, "wrote no metrics.json")


def test_evaluate_failure_reports_stderr(work: Path, capsys) -> None:
    script = write_py(work, "eval.py", "import sys\nsys.exit('cannot load model')\n")
    code, err = run_main(evaluate(script.name), capsys)
    assert code == 1
    assert_error(
        err,
        "evaluate script eval.py exited with code 1\n"
        "Last lines of its stderr:\n    cannot load model",
    )


# --- as Bazel runs it -----------------------------------------------------------


def test_command_line_success_and_failure(work: Path) -> None:
    good = write_sh(
        work, "good.sh", """echo chatter; echo noise >&2; echo model > "$4"\n"""
    )
    proc = subprocess.run(
        [sys.executable, *RUNNER, *train(good.name, python=False)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert (work / "out/model.bin").read_text(encoding="utf-8") == "model\n"

    bad = write_sh(work, "bad.sh", "echo 'no GPU found' >&2; exit 7\n")
    proc = subprocess.run(
        [sys.executable, *RUNNER, *train(bad.name, python=False)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"databazel: error: {TARGET}: train script bad.sh exited with code 7\n"
        "Last lines of its stderr:\n    no GPU found\n"
    )


# --- timeout and termination ------------------------------------------------

# A training script that writes part of a model, starts a grandchild that would
# outlive it, records the grandchild's pid, and hangs.
HANG = """
import subprocess, sys, time
argv = sys.argv[1:]
out = argv[argv.index("--model-output-path") + 1]
with open(out, "w") as f:
    f.write("half a model")
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open("grandchild.pid", "w") as f:
    f.write(str(child.pid))
print("epoch 1 of 1000", file=sys.stderr, flush=True)
time.sleep(600)
"""


def _wait_for(path: Path, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether process `pid` has ended (a zombie counts as ended) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_timeout_kills_the_script_and_its_children(work: Path, capsys) -> None:
    script = write_py(work, "train.py", HANG)
    start = time.monotonic()
    code, err = run_main(train(script.name, "--timeout", "1.5"), capsys)
    elapsed = time.monotonic() - start
    assert code == 1
    assert_error(
        err,
        "train script train.py was still running after the timeout of 1.5 s and was killed",
        "raise the target's `timeout`",
        "    epoch 1 of 1000",
    )
    assert elapsed < 1.5 + process.KILL_GRACE_SECONDS + 5
    assert _gone(int((work / "grandchild.pid").read_text()))
    # The half-written model is not left where a result is expected.
    assert not (work / "out/model.bin").exists()


def test_a_script_within_its_timeout_succeeds(work: Path, capsys) -> None:
    script = write_py(work, "train.py", RECORD_ARGV)
    code, err = run_main(train(script.name, "--timeout", "60"), capsys)
    assert (code, err) == (0, "")
    # The timeout is the runner's business: the script never sees it.
    assert "--timeout" not in json.loads((work / "out/model.bin").read_text())


def test_timeout_must_be_positive(work: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        runner.run(train("train.py", "--timeout", "0"))
    assert "expected a positive number of seconds" in capsys.readouterr().err


def test_sigterm_to_the_runner_stops_the_script_and_removes_the_output(
    work: Path,
) -> None:
    script = write_py(work, "train.py", HANG)
    proc = subprocess.Popen(
        [sys.executable, *RUNNER, *train(script.name)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(work / "grandchild.pid")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=process.KILL_GRACE_SECONDS + 10)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM
    assert _gone(int((work / "grandchild.pid").read_text()))
    assert not (work / "out/model.bin").exists()


# --- --allow-failure: failures recorded as results ---------------------------


def read_failed_model(path: Path) -> dict:
    data = path.read_bytes()
    assert data.startswith(records.FAILED_MODEL_HEADER)
    return json.loads(data[len(records.FAILED_MODEL_HEADER) :])


def test_allow_failure_records_a_crashing_training(work: Path, capsys) -> None:
    script = write_py(
        work,
        "train.py",
        """
        import sys
        out = sys.argv[sys.argv.index("--model-output-path") + 1]
        open(out, "w").write("half a model")
        print("ValueError: bad learning rate", file=sys.stderr)
        sys.exit(3)
        """,
    )
    code, err = run_main(train(script.name, "--allow-failure"), capsys)
    assert code == 0
    assert err.startswith(f"databazel: warning: {TARGET}: the trial failed; recorded")
    assert "exited with code 3" in err
    record = read_failed_model(work / "out/model.bin")
    assert record == {
        "status": "failed",
        "stage": "train",
        "target": TARGET,
        "exit_code": 3,
        "signal": None,
        "error": "train script train.py exited with code 3\n"
        "Last lines of its stderr:\n    ValueError: bad learning rate",
        "stderr_tail": "ValueError: bad learning rate",
    }


def test_a_failure_record_appears_whole_in_one_rename(
    work: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = write_py(work, "crash.py", "import sys; sys.exit(4)\n")
    model = work / "out" / "model.bin"
    renames: list[tuple[bytes, bool]] = []
    real_replace = os.replace

    def replace(src, dst) -> None:
        if os.path.abspath(dst) == str(model):
            renames.append((Path(src).read_bytes(), os.path.lexists(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert run_main(train(crash.name, "--allow-failure"), capsys)[0] == 0
    # Nothing was at the model's path until the whole record was moved there.
    assert renames == [(model.read_bytes(), False)]
    assert read_failed_model(model)["exit_code"] == 4


def test_a_failure_record_is_written_whole_or_not_at_all(
    work: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk fills up half-way through the record.
    crash = write_py(work, "crash.py", "import sys; sys.exit(4)\n")
    real_open = open

    class HalfWritten:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data) -> int:
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    def filling_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        inside = os.path.abspath(path).startswith(str(work / "out") + os.sep)
        return HalfWritten(f) if "w" in mode and inside else f

    monkeypatch.setattr("builtins.open", filling_open)
    code, err = run_main(train(crash.name, "--allow-failure"), capsys)
    monkeypatch.undo()
    assert code == 1
    assert_error(err, "No space left on device")
    assert os.listdir(work / "out") == []  # no half record, no temporary file


def test_pythonhome_in_env_is_named_not_a_missing_dependency(
    work: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner itself starts with -I; the script's Python honours PYTHONHOME.
    monkeypatch.setenv("PYTHONHOME", str(work / "nowhere"))
    script = write_py(work, "train.py", RECORD_ARGV)
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(
        err,
        f"train script {script.name} exited with code 1\n"
        "Python could not start: it found no `encodings`, a module of its own "
        "standard library (not something `deps` gives); the target's `env` sets "
        f"PYTHONHOME={work / 'nowhere'}, which points Python away from it: remove "
        "that from `env`.\n",
    )
    assert "which is in none of its `deps`" not in err


def test_a_params_file_encoded_twice_is_read_as_bazel_meant_it(tmp_path: Path) -> None:
    name = "dätä_日本.txt"
    twice = (
        name.encode("utf-8").decode("latin-1").encode("utf-8")
    )  # as Bazel 4.2 writes
    params = tmp_path / "m.params"
    params.write_bytes(b"train\n--data\nu/" + twice + b"\n--target\n//u:m\n")
    assert runner.expand_argv([f"@{params}"]) == [
        "train", "--data", f"u/{name}", "--target", "//u:m",
    ]  # fmt: skip
    # Encoded once (a newer Bazel, a person): as it is.
    params.write_bytes(f"train\n--data\nu/{name}\n".encode())
    assert runner.expand_argv([f"@{params}"]) == ["train", "--data", f"u/{name}"]
    # Not UTF-8 once more (é alone is byte e9), or ASCII: as they are.
    for argv in (["--data", "dätä"], ["--data", "Ã©té"], ["plain"]):
        assert runner.undo_double_utf8(argv) == argv
    # A worker's arguments (WorkRequest strings) the same way.
    assert runner.undo_double_utf8(["--data", "Ã©"]) == ["--data", "é"]


def test_a_recorded_traceback_names_the_script_relative_to_the_execroot(
    work: Path, capsys
) -> None:
    # The execroot is a sandbox's, another each build: the record keeps none of it.
    (work / "scripts").mkdir()
    script = write_py(work / "scripts", "train.py", "raise ValueError('diverged')\n")
    code, _ = run_main(train("scripts/train.py", "--allow-failure"), capsys)
    assert code == 0 and script.exists()
    record = read_failed_model(work / "out/model.bin")
    assert record["stderr_tail"] == (
        "Traceback (most recent call last):\n"
        '  File "scripts/train.py", line 1, in <module>\n'
        "    raise ValueError('diverged')\n"
        "ValueError: diverged"
    )
    assert str(work) not in json.dumps(record)


def test_a_gpu_the_machine_cannot_give_is_an_error_even_with_allow_failure(
    work: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine's problem, not the trial's: a record of it would be cached
    # and served on a machine that has the GPUs.
    locks = work / "gpus"
    locks.mkdir()
    (locks / "devices").write_text("# no GPU here\n")
    monkeypatch.setenv("DATABAZEL_GPU_LOCK_DIR", str(locks))
    script = write_py(work, "train.py", RECORD_ARGV)
    for extra in ([], ["--allow-failure"]):
        code, err = run_main(train(script.name, "--gpus", "1", *extra), capsys)
        assert code == 1
        assert_error(err, f"{TARGET} declares gpus = 1, and this machine has none")
        assert "warning" not in err
        assert not (work / "out/model.bin").exists()
    # A trial that fails on its GPU is recorded as usual.
    (locks / "devices").write_text("0\n")
    crash = write_py(work, "crash.py", "import sys; sys.exit(4)\n")
    assert run_main(train(crash.name, "--gpus", "1", "--allow-failure"), capsys)[0] == 0
    assert read_failed_model(work / "out/model.bin")["exit_code"] == 4


def test_allow_failure_records_a_killed_training_and_a_contract_violation(
    work: Path, capsys
) -> None:
    killed = write_py(
        work, "killed.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert run_main(train(killed.name, "--allow-failure"), capsys)[0] == 0
    record = read_failed_model(work / "out/model.bin")
    assert (record["exit_code"], record["signal"]) == (None, "SIGKILL")

    lazy = write_py(work, "lazy.py", "print('forgot to save')\n")
    assert run_main(train(lazy.name, "--allow-failure"), capsys)[0] == 0
    record = read_failed_model(work / "out/model.bin")
    assert (record["exit_code"], record["signal"]) == (0, None)
    assert "exited 0 but wrote no model" in record["error"]


def test_allow_failure_records_no_exit_code_for_a_script_that_never_ran(
    work: Path, capsys
) -> None:
    # The contract is broken before the script runs (its hyperparameters), so
    # there is no exit code to record: not 0, which would say the script ran.
    (work / "hp.json").write_text('{"C": 1}', encoding="utf-8")
    ran = write_py(work, "train.py", "open('ran', 'w').close()\n")
    assert run_main(train(ran.name, "--allow-failure"), capsys)[0] == 0
    assert not (work / "ran").exists()
    record = read_failed_model(work / "out/model.bin")
    assert (record["exit_code"], record["signal"]) == (None, None)
    assert "invalid hyperparameters file hp.json" in record["error"]
    # Nor for a script that cannot be started.
    (work / "hp.json").write_text('{"C": "1"}', encoding="utf-8")
    missing = train("missing.py", "--allow-failure", python=False)
    assert run_main(missing, capsys)[0] == 0
    record = read_failed_model(work / "out/model.bin")
    assert (record["exit_code"], record["signal"]) == (None, None)
    # A metrics file that breaks the contract after exit 0 records exit code 0.
    (work / "model.bin").write_text("model", encoding="utf-8")
    bad = write_py(
        work,
        "eval.py",
        """
        import os, sys
        out = sys.argv[sys.argv.index("--output-dir") + 1]
        open(os.path.join(out, "metrics.json"), "w").write('{"accuracy": "0.9"}')
        """,
    )
    assert run_main(evaluate(bad.name, "--allow-failure"), capsys)[0] == 0
    _, failure = records.parse_metrics_or_failure(
        (work / "out/eval.metrics.json").read_text()
    )
    assert failure is not None
    assert (failure["exit_code"], failure["signal"]) == (0, None)
    assert "wrote an invalid" in failure["error"]


def test_allow_failure_records_a_failed_evaluation(work: Path, capsys) -> None:
    (work / "model.bin").write_text("model", encoding="utf-8")
    script = write_py(
        work,
        "eval.py",
        "import sys\nprint('evaluation exploded', file=sys.stderr)\nsys.exit(5)\n",
    )
    code, _ = run_main(evaluate(script.name, "--allow-failure"), capsys)
    assert code == 0
    metrics, failure = records.parse_metrics_or_failure(
        (work / "out/eval.metrics.json").read_text()
    )
    assert metrics == {}
    assert failure is not None
    assert (failure["stage"], failure["exit_code"], failure["stderr_tail"]) == (
        "evaluate",
        5,
        "evaluation exploded",
    )
    assert (work / "out/eval_dir").is_dir()


EVAL_MUST_NOT_RUN = "import sys\nsys.exit('the evaluation script ran')\n"


def write_failed_model(work: Path) -> dict:
    record = records.failure_record(
        "train",
        "//pkg:t",
        contract.ScriptFailed("train script t.py exited with code 3", 3, "boom"),
    )
    (work / "model.bin").write_bytes(
        records.FAILED_MODEL_HEADER + records.format_failure(record).encode()
    )
    return dict(record)


def test_evaluating_a_failed_model_propagates_its_record(work: Path, capsys) -> None:
    record = write_failed_model(work)
    script = write_py(work, "eval.py", EVAL_MUST_NOT_RUN)
    code, _ = run_main(evaluate(script.name, "--allow-failure"), capsys)
    assert code == 0
    assert json.loads((work / "out/eval.metrics.json").read_text()) == record


def test_evaluating_a_failed_model_without_allow_failure_is_an_error(
    work: Path, capsys
) -> None:
    write_failed_model(work)
    script = write_py(work, "eval.py", EVAL_MUST_NOT_RUN)
    code, err = run_main(evaluate(script.name), capsys)
    assert code == 1
    assert_error(
        err,
        "the model model.bin is the failure record of //pkg:t, whose train step failed",
    )
    assert not (work / "out/eval.metrics.json").exists()


# --- hostile outputs and inputs (issue 18) -----------------------------------

SPECIAL_MODEL = """
import os, sys
argv = sys.argv[1:]
out = argv[argv.index("--model-output-path") + 1]
kind = os.environ["KIND"]
if kind == "fifo":
    os.mkfifo(out)
elif kind == "link":
    os.symlink("/etc/passwd", out)
else:
    os.symlink("/nonexistent/model", out)
"""


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "wrote a FIFO (named pipe) at out/model.bin"),
        ("link", "wrote a symbolic link (to /etc/passwd) at out/model.bin"),
        (
            "dangling",
            "wrote a symbolic link (to /nonexistent/model, which does not exist) at",
        ),
    ],
)
def test_a_model_that_is_not_a_regular_file_is_rejected_and_removed(
    work: Path, capsys, monkeypatch: pytest.MonkeyPatch, kind: str, message: str
) -> None:
    monkeypatch.setenv("KIND", kind)
    script = write_py(work, "train.py", SPECIAL_MODEL)
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(err, message, "where a model file was expected; write the file itself")
    assert not os.path.lexists(work / "out/model.bin")


SPECIAL_OUTPUTS = """
import os, socket, sys
argv = sys.argv[1:]
out = argv[argv.index("--output-dir") + 1]
with open(os.path.join(out, "metrics.json"), "w") as f:
    f.write('{"accuracy": 1}')
os.makedirs(os.path.join(out, "deep", "er"))
os.mkfifo(os.path.join(out, "deep", "er", "pipe"))
socket.socket(socket.AF_UNIX).bind(os.path.join(out, "sock"))
os.symlink("/etc/passwd", os.path.join(out, "passwd"))
with open(os.path.join(out, "kept.txt"), "w") as f:
    f.write("a regular file")
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.mark.parametrize("exit_code", ["0", "3"])
def test_special_files_in_the_output_dir_fail_and_are_removed(
    work: Path, capsys, monkeypatch: pytest.MonkeyPatch, exit_code: str
) -> None:
    monkeypatch.setenv("EXIT", exit_code)
    (work / "model.bin").write_text("m", encoding="utf-8")
    script = write_py(work, "eval.py", SPECIAL_OUTPUTS)
    code, err = run_main(evaluate(script.name), capsys)
    assert code == 1
    if exit_code == "0":
        assert_error(
            err,
            "evaluate script eval.py left 3 entries in out/eval_dir that are neither "
            "a regular file nor a directory (deep/er/pipe: a FIFO (named pipe); "
            "passwd: a symbolic link (to /etc/passwd); sock: a Unix socket)",
        )
    else:
        assert_error(err, "evaluate script eval.py exited with code 3")
    # Whatever failed, nothing is left that Bazel could block on or follow.
    left = sorted(
        str(p.relative_to(work / "out/eval_dir"))
        for p in (work / "out/eval_dir").rglob("*")
    )
    assert left == ["deep", "deep/er", "kept.txt", "metrics.json"]
    assert not (work / "out/eval.metrics.json").exists()


def test_a_source_directory_as_data_is_rejected(work: Path, capsys) -> None:
    (work / "datadir").mkdir()
    script = write_py(work, "train.py", RECORD_ARGV)
    argv = train(script.name)
    argv[argv.index("data.csv")] = "datadir"
    code, err = run_main(argv, capsys)
    assert code == 1
    assert_error(
        err,
        "`training_data` includes datadir, a directory of the source tree",
        '`training_data = glob(["datadir/**"])`',
    )
    # A directory an action generated is tracked file by file: accepted.
    (work / "bazel-out/bin/gen").mkdir(parents=True)
    argv[argv.index("datadir")] = "bazel-out/bin/gen"
    assert run_main(argv, capsys) == (0, "")


def test_hyperparameters_over_the_argument_limit_are_named(work: Path, capsys) -> None:
    (work / "hp.json").write_text(json.dumps({"big": "x" * 140000}), encoding="utf-8")
    script = write_py(work, "train.py", RECORD_ARGV)
    code, err = run_main(train(script.name), capsys)
    assert code == 1
    assert_error(
        err,
        "cannot run train script train.py: the hyperparameters (--hyperparams) take "
        "140,010 bytes, over Linux's limit of 131,072 bytes for one argument",
    )


KILL_PARENT = """
import os, signal, sys, time
with open("script.pid", "w") as f:
    f.write(str(os.getpid()))
os.kill(os.getppid(), int(os.environ["SIGNAL"]))
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_script_that_kills_its_runner_still_gets_an_error_line(
    work: Path, sig: signal.Signals
) -> None:
    script = write_py(work, "train.py", KILL_PARENT)
    proc = subprocess.run(
        [sys.executable, *RUNNER, *train(script.name)],
        capture_output=True,
        text=True,
        check=False,
        timeout=process.KILL_GRACE_SECONDS + 30,
        env={**os.environ, "SIGNAL": str(int(sig))},
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert_error(lines[0])
    if sig == signal.SIGKILL:
        assert proc.returncode == 1
        assert "the databazel runner was killed by signal SIGKILL" in lines[0]
    else:
        assert proc.returncode == 128 + sig
        assert "the databazel runner was told to stop (signal SIGTERM)" in lines[0]
    assert _gone(int((work / "script.pid").read_text()))
    assert not (work / "out/model.bin").exists()


# --- command-line templates (--args, the target's `args`) ---------------------

# A script that records its argv next to the path given after OUT_FLAG.
RECORD_ARGV_AT = """
import json, sys
argv = sys.argv[1:]
out = [a.split("=", 1)[1] for a in argv if a.startswith("{flag}=")][0]
with open(out, "w", encoding="utf-8") as f:
    json.dump(argv, f, ensure_ascii=False)
"""


def test_train_template_gives_exactly_its_arguments(work: Path, capsys) -> None:
    script = write_py(work, "train.py", RECORD_ARGV_AT.format(flag="--out"))
    template = [
        "--c={hp.C}",
        "--max-iter={hp.max_iter}",
        "--out={model_output_path}",
        "{data}",
        "--all",
        "{hyperparams}",
        "{{x}}",
    ]
    code, err = run_main(train(script.name, "--args", json.dumps(template)), capsys)
    assert (code, err) == (0, "")
    assert json.loads((work / "out/model.bin").read_text(encoding="utf-8")) == [
        "--c=0.1",
        "--max-iter=100",
        "--out=out/model.bin",
        "data.csv",
        "--all",
        '{"C":"0.1","max_iter":"100"}',
        "{x}",
    ]


def test_train_template_in_epochs_resumes_from_epoch_two_on(work: Path, capsys) -> None:
    script = write_py(work, "train.py", RECORD_ARGV_AT.format(flag="--out"))
    template = json.dumps(
        [
            "--out={model_output_path}",
            "--epoch",
            "{epoch}",
            "--resume-from",
            "{init_model_path}",
        ]
    )
    code, err = run_main(train(script.name, "--args", template, "--epoch", "1"), capsys)
    assert (code, err) == (0, "")
    argv = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    assert argv == ["--out=out/model.bin", "--epoch", "1"]
    (work / "prev.bin").write_text("epoch 1", encoding="utf-8")
    code, err = run_main(
        train(
            script.name,
            "--args",
            template,
            "--epoch",
            "2",
            "--init-model-path",
            "prev.bin",
        ),
        capsys,
    )
    assert (code, err) == (0, "")
    argv = json.loads((work / "out/model.bin").read_text(encoding="utf-8"))
    assert argv == ["--out=out/model.bin", "--epoch", "2", "--resume-from", "prev.bin"]


def test_train_template_naming_a_missing_hyperparameter_fails_before_running(
    work: Path, capsys
) -> None:
    # A model with `hyperparams_file`: the names are only known now.
    script = write_sh(work, "train.sh", "touch ran\n")
    template = json.dumps(["--lr={hp.lr}", "{model_output_path}"])
    code, err = run_main(train(script.name, "--args", template, python=False), capsys)
    assert code == 1
    assert_error(
        err,
        '`args` entry "--lr={hp.lr}" uses `{hp.lr}`, but there is no hyperparameter '
        "`lr` (the hyperparameters are: C, max_iter)",
    )
    assert not (work / "ran").exists()
    assert not (work / "out/model.bin").exists()


def test_train_template_without_a_model_names_the_placeholder(
    work: Path, capsys
) -> None:
    script = write_sh(work, "train.sh", "exit 0\n")
    template = json.dumps(["--out", "{model_output_path}"])
    code, err = run_main(train(script.name, "--args", template, python=False), capsys)
    assert code == 1
    assert_error(
        err,
        "exited 0 but wrote no model at out/model.bin; the script must write the "
        "model file to the path given by {model_output_path}",
    )


# The 2019 databazel example's evaluation script: --output-file, and the
# model's path as a "model" entry of its metrics.
EVAL_2019 = """
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--model-path", required=True)
parser.add_argument("--data-path", required=True)
parser.add_argument("--output-file", required=True)
args = parser.parse_args()
with open(args.output_file, "w") as f:
    json.dump({"accuracy": 0.5, "model": args.model_path}, f)
"""
TEMPLATE_2019 = json.dumps(
    [
        "--model-path",
        "{model_path}",
        "--data-path",
        "{data_path}",
        "--output-file",
        "{metrics_file}",
    ]
)


def test_evaluate_template_with_an_ignored_entry(work: Path, capsys) -> None:
    (work / "model.bin").write_text("model", encoding="utf-8")
    script = write_py(work, "eval.py", EVAL_2019)
    code, err = run_main(
        evaluate(script.name, "--args", TEMPLATE_2019, "--ignore-metric", "model"),
        capsys,
    )
    assert (code, err) == (0, "")
    assert (work / "out/eval.metrics.json").read_text() == '{\n  "accuracy": 0.5\n}\n'
    # What the script wrote stays, as it wrote it, in the outputs directory.
    assert json.loads((work / "out/eval_dir/metrics.json").read_text()) == {
        "accuracy": 0.5,
        "model": "model.bin",
    }


def test_evaluate_string_entry_not_ignored_is_an_error_naming_the_fix(
    work: Path, capsys
) -> None:
    (work / "model.bin").write_text("model", encoding="utf-8")
    script = write_py(work, "eval.py", EVAL_2019)
    code, err = run_main(evaluate(script.name, "--args", TEMPLATE_2019), capsys)
    assert code == 1
    assert_error(
        err,
        'wrote an invalid out/eval_dir/metrics.json: metric "model" has a string '
        '"model.bin" value; it must be a number',
        "put entries that are not metrics in `ignore_metrics` (of `evaluate` or `hyperparam_search`)",
    )
    assert not (work / "out/eval.metrics.json").exists()


def test_ignore_metric_with_the_fixed_command_line(work: Path, capsys) -> None:
    (work / "model.bin").write_text("model", encoding="utf-8")
    script = write_py(
        work,
        "eval.py",
        """
        import os, sys
        out_dir = sys.argv[sys.argv.index("--output-dir") + 1]
        open(os.path.join(out_dir, "metrics.json"), "w").write(
            '{"note": [1, "x"], "run": "r1", "loss": 0.25}')
        """,
    )
    code, err = run_main(
        evaluate(script.name, "--ignore-metric", "note", "--ignore-metric", "run"),
        capsys,
    )
    assert (code, err) == (0, "")
    assert json.loads((work / "out/eval.metrics.json").read_text()) == {"loss": 0.25}
    code, err = run_main(
        evaluate(
            script.name,
            "--ignore-metric",
            "note",
            "--ignore-metric",
            "run",
            "--ignore-metric",
            "loss",
        ),
        capsys,
    )
    assert code == 1
    assert_error(
        err, "every entry is one of `ignore_metrics`; at least one metric is required"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            ["--output-file", "{metrics_file}"],
            "evaluate script eval.py exited 0 but wrote no metrics file at "
            "out/eval_dir/metrics.json, the path given by {metrics_file} (the directory is empty)",
        ),
        (
            ["--dir={output_dir}"],
            "evaluate script eval.py exited 0 but wrote no metrics.json in out/eval_dir "
            "(the directory is empty); the script must write DIR/metrics.json where "
            "DIR is the path given by {output_dir}",
        ),
    ],
)
def test_evaluate_template_without_metrics_names_the_placeholder(
    work: Path, capsys, template: list[str], message: str
) -> None:
    script = write_py(work, "eval.py", "pass\n")
    code, err = run_main(evaluate(script.name, "--args", json.dumps(template)), capsys)
    assert code == 1
    assert_error(err, message)
