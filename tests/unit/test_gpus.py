"""Tests for databazel/private/gpus.py: the machine's GPUs, their locks, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import gpus
import pytest
from contract import RunnerError
import other_user
from other_user import OTHER_UID, needs_root


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
    # Lock files are the machine's: everyone may open them (to lock; no one writes).
    mode = stat.S_IMODE(os.stat(tmp_path / "0.lock").st_mode)
    assert mode == 0o644


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
        "//t:a: waiting 60 s for 1 of the 1 GPUs, which other trials hold "
        f"(0: held by pid {os.getpid()} ({me()}: {command_line()}))"
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


# --- a machine shared with other users ---------------------------------------


def me() -> str:
    return f"user {pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"


def command_line() -> str:
    with open("/proc/self/cmdline", "rb") as f:
        command = " ".join(f.read().replace(b"\0", b" ").decode().split())
    return command if len(command) <= 120 else command[:117] + "..."


def within(seconds: float, call: Callable[[], object]) -> object:
    """`call()`, failing the test if it blocks (a FIFO opened for reading would)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"blocked for {seconds} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def test_a_missing_lock_directory_is_made_shared_by_root_and_private_otherwise(
    tmp_path: Path,
) -> None:
    locks = tmp_path / "gpus"
    gpus.check_lock_dir(str(locks))
    mode = stat.S_IMODE(locks.stat().st_mode)
    assert mode == (0o1777 if os.geteuid() == 0 else 0o755)
    gpus.check_lock_dir(str(locks))  # and it passes its own check


@needs_root
def test_a_lock_directory_another_user_owns_is_refused_naming_the_fix(
    tmp_path: Path,
) -> None:
    locks = tmp_path / "gpus"
    _devices(locks, "0")
    os.chown(locks, OTHER_UID, OTHER_UID)
    with pytest.raises(gpus.MachineError) as e:
        with gpus.allocate(1, "//t:a", str(locks), _no_probe):
            pass
    message = str(e.value)
    assert message.startswith(
        f"the GPU lock directory {locks} is owned by uid {OTHER_UID}, not by you or "
        "root; another user could choose or hold your trials' GPUs."
    )
    assert f"install -d -m 1777 {locks}" in message
    assert "set DATABAZEL_GPU_LOCK_DIR in the target's `env`" in message


def test_a_lock_directory_others_may_write_must_be_sticky(tmp_path: Path) -> None:
    locks = tmp_path / "gpus"
    locks.mkdir()
    locks.chmod(0o777)
    with pytest.raises(
        gpus.MachineError, match=r"writable by other users \(mode 0777\) and not sticky"
    ):
        gpus.check_lock_dir(str(locks))
    locks.chmod(0o1777)
    gpus.check_lock_dir(str(locks))
    # A directory above it counts too: whoever may rename it may swap it.
    above = tmp_path / "open"
    above.mkdir()
    above.chmod(0o777)
    with pytest.raises(gpus.MachineError, match=f"is in {above}, which is writable"):
        gpus.check_lock_dir(str(above / "gpus"))
    assert not (above / "gpus").exists()
    # A symbolic link is not followed to a directory someone else chose.
    (tmp_path / "link").symlink_to(locks)
    with pytest.raises(gpus.MachineError, match="is a symbolic link"):
        gpus.check_lock_dir(str(tmp_path / "link"))


@needs_root
def test_a_devices_file_another_user_can_write_is_never_read(tmp_path: Path) -> None:
    _devices(tmp_path, "0", "1")
    devices = tmp_path / gpus.DEVICES_FILE
    os.chown(devices, OTHER_UID, OTHER_UID)
    with pytest.raises(gpus.MachineError) as e:
        gpus.list_gpus(str(tmp_path), _no_probe)
    assert str(e.value) == (
        f"the GPU list {devices} is owned by uid {OTHER_UID}, not by you or root: "
        "it is not trusted to choose your trials' GPUs; remove it (or make it yours, "
        "mode 0644)"
    )
    os.chown(devices, 0, 0)
    devices.chmod(0o666)
    with pytest.raises(
        gpus.MachineError, match=r"is writable by other users \(mode 0666\)"
    ):
        gpus.list_gpus(str(tmp_path), _no_probe)
    devices.chmod(0o644)
    assert gpus.list_gpus(str(tmp_path), _no_probe) == ["0", "1"]


def test_a_devices_link_or_fifo_is_refused_without_reading_or_blocking(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("GPU-root-only-secret\n")
    secret.chmod(0o600)
    locks = tmp_path / "gpus"
    locks.mkdir()
    (locks / gpus.DEVICES_FILE).symlink_to(secret)
    with pytest.raises(gpus.MachineError) as e:
        gpus.list_gpus(str(locks), _no_probe)
    assert str(e.value) == f"the GPU list {locks}/devices is a symbolic link; remove it"
    assert not list(locks.glob("*.lock"))
    (locks / gpus.DEVICES_FILE).unlink()
    os.mkfifo(locks / gpus.DEVICES_FILE)
    with pytest.raises(
        gpus.MachineError, match=r"devices is a FIFO \(named pipe\): it is not trusted"
    ):
        within(10, lambda: gpus.list_gpus(str(locks), _no_probe))


def test_a_lock_file_that_is_a_fifo_or_a_link_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    _devices(tmp_path, "0")
    os.mkfifo(tmp_path / "0.lock")
    with pytest.raises(gpus.MachineError) as e:
        within(10, lambda: gpus.try_lock(str(tmp_path), ["0"], 1))
    assert str(e.value) == (
        f"the GPU lock file {tmp_path}/0.lock is a FIFO (named pipe); remove it"
    )
    (tmp_path / "0.lock").unlink()
    (tmp_path / "0.lock").symlink_to(tmp_path / "elsewhere.lock")
    with pytest.raises(gpus.MachineError, match="0.lock is a symbolic link; remove it"):
        gpus.try_lock(str(tmp_path), ["0"], 1)
    assert not (tmp_path / "elsewhere.lock").exists()


def test_a_lock_held_forever_fails_the_trial_at_its_limit_naming_the_holder(
    tmp_path: Path,
) -> None:
    _devices(tmp_path, "0", "1")
    # Another trial (or user) that took both GPUs and never lets go.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "for path in sys.argv[1:]:\n"
            "    fcntl.flock(os.open(path, os.O_RDONLY | os.O_CREAT), fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",
            str(tmp_path / "0.lock"),
            str(tmp_path / "1.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds
            assert now[0] < 60, "still waiting past the limit"

        with pytest.raises(gpus.MachineError) as e:
            with gpus.allocate(
                1,
                "//t:a",
                str(tmp_path),
                _no_probe,
                clock=lambda: now[0],
                sleep=sleep,
                limit=gpus.wait_limit(5.0, {}),
            ):
                raise AssertionError("got a GPU another process holds")
        assert 5 <= now[0] < 5.5
        message = str(e.value)
        held_by = f"held by pid {holder.pid} ({me()}: {sys.executable} -c import fcntl"
        assert message.startswith(
            f"waited 5 s for 1 of the 2 GPUs in {tmp_path}, the most the target's "
            f"timeout of 5 s allows, and fewer were free; 0: {held_by}"
        ), message
        assert f"; 1: {held_by}" in message
    finally:
        holder.kill()
        holder.wait()


def test_the_wait_limit_is_the_timeout_else_the_env_else_an_hour() -> None:
    assert gpus.wait_limit(5.0, {"DATABAZEL_GPU_WAIT": "9"}) == (
        5.0,
        "the target's timeout of 5 s",
    )
    assert gpus.wait_limit(None, {"DATABAZEL_GPU_WAIT": "9"}) == (
        9.0,
        "DATABAZEL_GPU_WAIT = 9 of the target's `env`",
    )
    assert gpus.wait_limit(None, {"DATABAZEL_GPU_WAIT": "0"})[0] is None
    limit, source = gpus.wait_limit(None, {})
    assert limit == 3600.0
    assert source.startswith("the default of 3600 s for a target without `timeout`")
    for bad in ("soon", "-1", "inf", "nan"):
        with pytest.raises(gpus.MachineError, match="must be a number of seconds"):
            gpus.wait_limit(None, {"DATABAZEL_GPU_WAIT": bad})


@needs_root
def test_in_a_sandbox_that_maps_only_the_user_a_shared_directory_passes_a_gpu_list_does_not() -> (
    None
):
    # As in Bazel's linux-sandbox for a user who is not root: a user namespace
    # that maps only their uid, in which root's files show uid 65534.
    with other_user.shared_tmp() as tmp:
        sandboxed_gpu_trial(tmp)


def sandboxed_gpu_trial(tmp: Path) -> None:
    code = tmp / "code"
    code.mkdir()
    private = Path(gpus.__file__).parent
    for module in ("gpus.py", "contract.py"):
        shutil.copy(private / module, code / module)
    code.chmod(0o755)
    shared = tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(code)!r})
        import gpus
        print(open("/proc/self/uid_map").read().split())
        with gpus.allocate(1, "//t:a", {str(shared)!r}, lambda: ["0"]) as (ids, _):
            print(ids)
        open({str(shared / "devices")!r}, "x").close()
        """
    )
    (shared / "devices").write_text("0\n")
    (shared / "devices").chmod(0o644)
    # A user namespace of the other user's, as Bazel's sandbox makes.
    sandboxed = ("unshare", "--user", "--map-current-user", other_user.PYTHON, "-c")
    listed = other_user.run(*sandboxed, script, check=False)
    assert listed.stdout.splitlines() == [f"['{OTHER_UID}', '{OTHER_UID}', '1']"]
    assert listed.stderr.splitlines()[-1] == (
        f"contract.MachineError: the GPU list {shared}/devices is owned by a user this "
        "action's sandbox does not map (all of them show uid 65534 there), not by you "
        "or root: it is not trusted to choose your trials' GPUs; remove it (or make it "
        "yours, mode 0644)"
    )
    # Without the list: root's shared directory (uid 65534 there) is used.
    (shared / "devices").unlink()
    shared_ok = other_user.run(*sandboxed, script, check=False)
    assert shared_ok.stdout.splitlines()[1:] == ["['0']"], shared_ok.stderr
    assert (shared / "0.lock").stat().st_uid == OTHER_UID
