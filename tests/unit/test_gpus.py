"""Tests for databazel/private/gpus.py: the machine's GPUs, their locks, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import gpus
import pytest
from contract import RunnerError


def _devices(directory: Path, *ids: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / gpus.DEVICES_FILE).write_text(
        "# stand-in\n" + "".join(i + "\n" for i in ids)
    )


def _no_probe() -> list[str]:
    raise AssertionError("nvidia-smi must not be asked when the devices file exists")


def test_devices_file_replaces_nvidia_smi(tmp_path: Path) -> None:
    _devices(tmp_path, "0", "1", "1", "GPU-8f2e3c1a-0000")
    assert gpus.list_gpus(str(tmp_path), _no_probe) == ["0", "1", "GPU-8f2e3c1a-0000"]
    # Without the file, the probe (nvidia-smi) lists them; none here.
    assert gpus.list_gpus(str(tmp_path / "nothing"), lambda: ["GPU-a"]) == ["GPU-a"]
    assert gpus.list_gpus(str(tmp_path / "nothing"), lambda: []) == []


def test_an_id_that_is_not_a_file_name_is_refused(tmp_path: Path) -> None:
    _devices(tmp_path, "../etc")
    with pytest.raises(RunnerError, match="is not a device index or UUID"):
        gpus.list_gpus(str(tmp_path), _no_probe)


def test_allocate_takes_distinct_gpus_and_frees_them(tmp_path: Path) -> None:
    _devices(tmp_path, "0", "1")
    d = str(tmp_path)
    with gpus.allocate(1, "//t:a", d, _no_probe) as (first, fds):
        assert first == ["0"] and len(fds) == 1
        with gpus.allocate(1, "//t:b", d, _no_probe) as (second, _):
            assert second == ["1"]
            # Both held: a third trial finds none free.
            assert gpus.try_lock(d, ["0", "1"], 1) == []
        assert [g for g, _ in gpus.try_lock(d, ["0", "1"], 1)] == ["1"]
    # Lock files are the machine's: everyone may open them.
    mode = stat.S_IMODE(os.stat(tmp_path / "0.lock").st_mode)
    assert mode == 0o666


def test_several_gpus_are_taken_all_or_none(tmp_path: Path) -> None:
    _devices(tmp_path, "0", "1", "2")
    d = str(tmp_path)
    with gpus.allocate(1, "//t:a", d, _no_probe):
        # Two of three free: a trial that needs three takes none of them.
        assert gpus.try_lock(d, ["0", "1", "2"], 3) == []
        held = gpus.try_lock(d, ["0", "1", "2"], 2)
        assert [g for g, _ in held] == ["1", "2"]
        for _, fd in held:
            os.close(fd)


def test_allocate_waits_for_a_free_gpu(tmp_path: Path) -> None:
    _devices(tmp_path, "0")
    d = str(tmp_path)
    holder = os.open(tmp_path / "0.lock", os.O_RDONLY | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    now = [0.0]
    notices: list[str] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 90:  # the other trial ends
            os.close(holder)

    with gpus.allocate(
        1,
        "//t:a",
        d,
        _no_probe,
        notice=notices.append,
        clock=lambda: now[0],
        sleep=sleep,
    ) as (ids, _):
        assert ids == ["0"]
    assert now[0] >= 90
    assert notices == [
        "//t:a: waiting 60 s for 1 of the 1 GPUs, which other trials hold"
    ]


def test_more_gpus_than_the_machine_has_fail_at_once(tmp_path: Path) -> None:
    with pytest.raises(RunnerError) as e:
        with gpus.allocate(1, "//t:a", str(tmp_path), lambda: []):
            pass
    assert str(e.value).startswith("//t:a declares gpus = 1, and this machine has none")
    _devices(tmp_path, "0")
    with pytest.raises(
        RunnerError, match=r"declares gpus = 2, and this machine has only 1 \(0\)"
    ):
        with gpus.allocate(2, "//t:a", str(tmp_path), _no_probe):
            pass


def test_the_lock_outlives_the_runner_while_the_script_runs(tmp_path: Path) -> None:
    """A script that inherits the descriptors keeps its GPU until it exits."""
    _devices(tmp_path, "0")
    d = str(tmp_path)
    with gpus.allocate(1, "//t:a", d, _no_probe) as (_, fds):
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            pass_fds=fds,
        )
    try:
        assert gpus.try_lock(d, ["0"], 1) == []  # the runner let go; the script has it
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    held = gpus.try_lock(d, ["0"], 1)
    assert [g for g, _ in held] == ["0"]
    os.close(held[0][1])


def test_a_killed_holder_frees_its_gpu(tmp_path: Path) -> None:
    _devices(tmp_path, "0")
    private = Path(gpus.__file__).parent
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                sys.path.insert(0, {str(private)!r})
                import gpus
                with gpus.allocate(1, "//t:a", {str(tmp_path)!r}):
                    print("held", flush=True)
                    time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    assert gpus.try_lock(str(tmp_path), ["0"], 1) == []
    holder.kill()
    holder.wait()
    held = gpus.try_lock(str(tmp_path), ["0"], 1)
    assert [g for g, _ in held] == ["0"]
    os.close(held[0][1])


def test_script_environment() -> None:
    assert gpus.script_environment(2, ["0", "3"], {}) == {"CUDA_VISIBLE_DEVICES": "0,3"}
    # gpus = 1 replaces what env says; without gpus, env's value stands, and
    # a trial that declares none sees no GPU.
    assert gpus.script_environment(1, ["1"], {"CUDA_VISIBLE_DEVICES": "0"}) == {
        "CUDA_VISIBLE_DEVICES": "1"
    }
    assert gpus.script_environment(0, [], {"CUDA_VISIBLE_DEVICES": "0"}) == {}
    assert gpus.script_environment(0, [], {}) == {"CUDA_VISIBLE_DEVICES": ""}


def test_lock_dir_comes_from_the_action_environment() -> None:
    assert gpus.lock_dir({}) == "/tmp/databazel-gpus"
    assert gpus.lock_dir({"DATABAZEL_GPU_LOCK_DIR": "/x"}) == "/x"
