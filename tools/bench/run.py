#!/usr/bin/env python3
"""Benchmarks of databazel: its own cost per trial, and how it grows with the number of trials.

    tools/bench/run.py            # everything (~35 min on 2 busy cores), writes docs/benchmarks.{md,json,png}
    tools/bench/run.py --quick    # tiny sizes, one repeat, no MNIST: checks the command works
    tools/bench/run.py --reps 5   # more repeats (medians are reported)

Trivial trials (`#!/bin/sh` scripts that write a file) show databazel's and
Bazel's own cost; the MNIST search (`//mnist:bzl_search`) shows real work. Every
figure sits next to a baseline measured in the same run: the same scripts run
directly as processes, a serial loop, an empty build, or plain genrules.

The trivial searches run in a fixture workspace (tests/bazel_harness.py) that
loads this checkout as @databazel with the Python environment of
requirements_lock.txt, so each action's sandbox holds the same ~6k files as the
MNIST search's. The MNIST search runs in this checkout with an output base of
its own (your bazel-bin is left alone). Every Bazel server started here is shut
down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import halving  # noqa: E402
from common import SANDBOXED, loadavg, median, timed, wait_quiet  # noqa: E402
import remote  # noqa: E402
import rules_python  # noqa: E402
import tpe  # noqa: E402
import torch_search  # noqa: E402
import trials  # noqa: E402
import warm_profile  # noqa: E402
from bare_loop import action_env, mnist_loop  # noqa: E402
from bazel_harness import Result, Workspace, processes_run  # noqa: E402
from render import plot, render, verdicts  # noqa: E402

TRAIN_SH = """#!/bin/sh
# SCRIPT --data DATA --model-output-path OUT --hyperparams JSON
printf '%s' "$6" > "$4"
"""

EVALUATE_SH = """#!/bin/sh
# SCRIPT --model-path MODEL --data-path DATA --output-dir DIR
printf '{"accuracy": %s}' "$(wc -c < "$2")" > "$6/metrics.json"
"""

LOAD = 'load("@databazel//databazel:defs.bzl", "hyperparam_search")\n'


# ---------------------------------------------------------------------------
# Machine, load and versions


def machine() -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
    }


def _output(command: Sequence[str], cwd: Path = REPO) -> str:
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def versions() -> dict[str, str]:
    bazel = _output(["bazel", "--version"])
    if not bazel or "no_version" in bazel:
        # Debian's bazel-bootstrap reports "no_version"; its package knows better.
        package = _output(["dpkg-query", "-W", "-f=${Version}", "bazel-bootstrap"])
        bazel = f"bazel {package} (Debian bazel-bootstrap)" if package else bazel
    commit = _output(["git", "rev-parse", "--short=12", "HEAD"])
    if _output(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return {
        "bazel": bazel,
        "python": platform.python_version(),
        "databazel": commit,
    }


# ---------------------------------------------------------------------------
# Small helpers


def grid_for(trials: int) -> dict[str, list[str]]:
    """A grid of exactly `trials` trials: factors of 10 first (10x10x50 for 5,000)."""
    dims, rest = [], trials
    while rest > 10 and rest % 10 == 0 and len(dims) < 2:
        dims.append(10)
        rest //= 10
    dims.append(rest)
    return {
        name: [str(i) for i in range(size)] for name, size in zip("abc", reversed(dims))
    }


def search_build(grid: dict[str, list[str]], name: str = "s") -> str:
    return (
        LOAD
        + f"""
hyperparam_search(
    name = "{name}",
    eval_executable = "//bench:evaluate",
    grid = {json.dumps(grid)},
    max_trials = {max(1000, _trials(grid))},
    metric = "accuracy",
    test_data = "//bench:data.txt",
    train_executable = "//bench:train",
    training_data = "//bench:data.txt",
)
"""
    )


def _trials(grid: dict[str, list[str]]) -> int:
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def genrules_build(actions: int) -> str:
    """The baseline for analysis: as many plain genrules as a search has trial actions."""
    return textwrap.dedent(
        f"""
        [genrule(
            name = "g%d" % i,
            outs = ["g%d.out" % i],
            cmd = "echo %d > $@" % i,
        ) for i in range({actions})]

        filegroup(
            name = "all",
            srcs = [":g%d" % i for i in range({actions})],
        )
        """
    )


NO_EXECUTION_LOG = (
    "the bench writes no execution log: it counts the processes a build ran "
    "(Bazel's INFO line), not the spawns of each mnemonic"
)


class ProcessCount(Result):
    """A build's result that knows how many processes ran, but not of which mnemonic."""

    def __init__(self, result: Result, processes: int | None) -> None:
        super().__init__(result.returncode, result.stdout, result.stderr)
        self.processes = processes

    def executed(self, mnemonic: str | None = None) -> int:
        if mnemonic is not None or self.processes is None:
            raise ValueError(NO_EXECUTION_LOG)
        return self.processes

    def executed_by_mnemonic(self) -> Counter[str]:
        raise ValueError(NO_EXECUTION_LOG)


class BenchWorkspace(Workspace):
    """The test harness's workspace without its execution log.

    The log lists every input of every spawn (~6k files of the Python
    environment each): the JSON one measured at ~0.4 s a trial and 90 MB for
    12 trials, so it would be much of what is measured. Processes are counted
    from Bazel's `INFO: N processes: ...` line instead (`Result.executed()`);
    they cannot be counted per mnemonic.
    """

    execution_log = False

    def bazel(self, *args: str, check: bool = False, timeout: float = 3600) -> Result:
        result = super().bazel(*args, check=check, timeout=timeout)
        return ProcessCount(result, processes_run(result.stderr))


def peak_rss_mib(ws: Workspace) -> float | None:
    pid = ws.server_pid()
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def server_cpu(ws: Workspace) -> float:
    """CPU seconds of the Bazel server and of the (waited-for) processes it ran: sandboxes, runners, scripts."""
    pid = ws.server_pid()
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 12 to 15 after the name.
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_server(ws: Workspace) -> None:
    """Shuts the server down and starts a new one (its start-up is not timed)."""
    ws.shutdown()
    ws.bazel("info", "release", check=True)


# ---------------------------------------------------------------------------
# The benchmarks


class Bench:
    def __init__(self, ws: Workspace, reps: int, log: Callable[[str], None]) -> None:
        self.ws = ws
        self.reps = reps
        self.log = log
        self.python = ws.output_base / "external/fixture_python/venv/bin/python3"
        self.env: dict[str, str] = {}  # the trials' action environment, from setup()

    def setup(self) -> None:
        self.ws.write("bench/train.sh", TRAIN_SH, executable=True)
        self.ws.write("bench/evaluate.sh", EVALUATE_SH, executable=True)
        self.ws.write("bench/data.txt", "x\n")
        self.ws.write(
            "bench/BUILD",
            """
            exports_files(["data.txt"])

            sh_binary(name = "train", srcs = ["train.sh"], visibility = ["//visibility:public"])

            sh_binary(name = "evaluate", srcs = ["evaluate.sh"], visibility = ["//visibility:public"])

            filegroup(name = "empty", srcs = [])
            """,
        )
        # Fetches the Python environment and builds the sh_binary scripts once.
        self.ws.write("warmup/BUILD", search_build(grid_for(2)))
        self.ws.build("//warmup:s", "//bench:empty")
        # The direct runs get the environment the trials' actions get.
        self.env = action_env(
            "deps(//warmup:s)",
            ("bazel", f"--output_base={self.ws.output_base}"),
            cwd=self.ws.root,
        )

    def build(self, target: str, *flags: str) -> tuple[float, Any]:
        return timed(lambda: self.ws.build(target, flags=flags))

    # -- scripts run directly, and through the runner without Bazel ---------

    def direct_trials(self, trials: int, runner: bool) -> list[float]:
        """Seconds per trial: train.sh + evaluate.sh as plain processes, or each through runner.py."""
        bench = self.ws.root / "bench"
        times = []
        runner_py = REPO / "databazel/private/tool.py"  # tool.py runner, as the actions
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(trials):
                model, out = Path(tmp) / f"{i}.model", Path(tmp) / f"{i}.out"
                hp = Path(tmp) / f"{i}.json"
                hp.write_text(json.dumps({"a": str(i)}))
                if runner:
                    commands = [
                        [str(self.python), "-I", "-S", "-X", "utf8", str(runner_py), "runner", "train", "--target", "//b:t",
                         "--script", str(bench / "train.sh"), "--hyperparams-file", str(hp),
                         "--model-output-path", str(model), "--data", str(bench / "data.txt")],
                        [str(self.python), "-I", "-S", "-X", "utf8", str(runner_py), "runner", "evaluate", "--target", "//b:e",
                         "--script", str(bench / "evaluate.sh"), "--model-path", str(model),
                         "--metrics-output", str(out) + ".json", "--output-dir", str(out),
                         "--data", str(bench / "data.txt")],
                    ]  # fmt: skip
                else:
                    out.mkdir()
                    commands = [
                        [str(bench / "train.sh"), "--data", str(bench / "data.txt"),
                         "--model-output-path", str(model), "--hyperparams", hp.read_text()],
                        [str(bench / "evaluate.sh"), "--model-path", str(model),
                         "--data-path", str(bench / "data.txt"), "--output-dir", str(out)],
                    ]  # fmt: skip
                start = time.perf_counter()
                for command in commands:
                    subprocess.run(command, env=self.env, check=True, cwd=tmp)
                times.append(time.perf_counter() - start)
        return times

    # -- per-trial overhead -----------------------------------------------

    def overhead(
        self, small: int, large: int, flags: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Marginal seconds per trial of a cold --jobs=1 build ((T(large) - T(small)) / (large - small))."""
        per_trial, cpu_per_trial = [], []
        mode = "sandboxed" if flags else "warm"
        for rep in range(self.reps):
            times, cpu = {}, {}
            for n in (small, large):
                package = f"overhead_{mode}_{rep}_{n}"
                self.ws.write(f"{package}/BUILD", search_build(grid_for(n)))
                before = server_cpu(self.ws)
                times[n], result = self.build(f"//{package}:s", "--jobs=1", *flags)
                cpu[n] = server_cpu(self.ws) - before
                assert result.executed() >= 2 * n, result.stderr[-2000:]
            per_trial.append((times[large] - times[small]) / (large - small))
            cpu_per_trial.append((cpu[large] - cpu[small]) / (large - small))
            self.log(
                f"overhead rep {rep}: {per_trial[-1]:.3f} s/trial wall, "
                f"{cpu_per_trial[-1]:.3f} s CPU through Bazel"
            )
        count = max(10, large - small)
        cpu = children_cpu()
        direct = self.direct_trials(count, runner=False)
        direct_cpu = (children_cpu() - cpu) / count
        runner = self.direct_trials(count, runner=True)
        runner_cpu = (children_cpu() - cpu) / count - direct_cpu
        bazel = median(per_trial)
        return {
            "cpu": {
                "bazel_per_trial": cpu_per_trial,
                "bazel": median(cpu_per_trial),
                "direct": direct_cpu,
                "runner": runner_cpu,
            },
            "trials": [small, large],
            "bazel_per_trial": per_trial,
            "bazel": bazel,
            "direct": median(direct),
            "runner": median(runner),
            "overhead": bazel - median(direct),
            "flags": list(flags),
        }

    # -- cold search, no-op rebuilds, growth ----------------------------------

    def cold_trivial(self, trials: int) -> dict[str, Any]:
        """Cold builds of a fresh `trials`-trial search with --jobs=1 and --jobs=2, against a serial loop."""
        out: dict[str, Any] = {"trials": trials}
        for jobs in (1, 2):
            times = []
            for rep in range(self.reps):
                package = f"cold_{jobs}_{rep}"
                self.ws.write(f"{package}/BUILD", search_build(grid_for(trials)))
                elapsed, _ = self.build(f"//{package}:s", f"--jobs={jobs}")
                times.append(elapsed)
            out[f"jobs{jobs}"] = median(times)
            out[f"jobs{jobs}_runs"] = times
        loops = [
            sum(self.direct_trials(trials, runner=False)) for _ in range(self.reps)
        ]
        out["serial_loop"] = median(loops)
        return out

    def scaling(self, sizes: Sequence[int]) -> list[dict[str, Any]]:
        """Per size: a cold build (--jobs=2), its actions, and no-op rebuilds (warm server)."""
        rows = []
        for n in sizes:
            wait_quiet(self.max_load, self.wait, self.log)
            package = f"size_{n}"
            self.ws.write(f"{package}/BUILD", search_build(grid_for(n)))
            load_before = loadavg()
            cold, result = self.build(f"//{package}:s", "--jobs=2")
            noops = []
            for _ in range(max(3, self.reps)):
                elapsed, again = self.build(f"//{package}:s")
                assert again.executed() == 0, again.stderr[-2000:]
                noops.append(elapsed)
            empty = [self.build("//bench:empty")[0] for _ in range(max(3, self.reps))]
            rows.append(
                {
                    "trials": n,
                    "cold": cold,
                    "actions": result.executed(),
                    "noop": median(noops),
                    "noop_runs": noops,
                    "empty_build": median(empty),
                    "load": [load_before, loadavg()],
                }
            )
            self.log(f"size {n}: cold {cold:.1f} s, no-op {median(noops):.2f} s")
        return rows

    def analysis(self, sizes: Sequence[int], reps: int) -> list[dict[str, Any]]:
        """Loading + analysis (`build --nobuild`) on a fresh server, and its peak memory; plain genrules beside."""
        rows = []
        for n in sizes:
            self.ws.write(f"analysis_{n}/BUILD", search_build(grid_for(n)))
            self.ws.write(f"genrules_{n}/BUILD", genrules_build(2 * n))
        for n in sizes:
            wait_quiet(self.max_load, self.wait, self.log)
            row: dict[str, Any] = {"trials": n, "load": [loadavg()]}
            for kind, target in (
                ("databazel", f"//analysis_{n}:s"),
                ("genrules", f"//genrules_{n}:all"),
            ):
                times, rss = [], []
                for _ in range(reps if kind == "databazel" else 1):
                    fresh_server(self.ws)
                    elapsed, _ = self.build(target, "--nobuild")
                    times.append(elapsed)
                    rss.append(peak_rss_mib(self.ws))
                row[kind] = {
                    "time": median(times),
                    "runs": times,
                    "peak_rss_mib": median([r for r in rss if r is not None]),
                }
            row["load"].append(loadavg())
            rows.append(row)
            self.log(
                f"analysis {n}: {row['databazel']['time']:.1f} s, "
                f"peak RSS {row['databazel']['peak_rss_mib']} MiB "
                f"(genrules {row['genrules']['time']:.1f} s)"
            )
        return rows

    def profile_analysis(self, n: int, out: Path) -> str:
        """`bazel analyze-profile` of the loading + analysis of `n` trials (fresh server)."""
        fresh_server(self.ws)
        profile = out / f"analysis_{n}.profile.gz"
        self.ws.build(f"//analysis_{n}:s", flags=("--nobuild", f"--profile={profile}"))
        return self.ws.bazel("analyze-profile", str(profile)).stdout

    def add_grid_value(self, built: dict[str, Any], reps: int) -> dict[str, Any]:
        """Adds one value to the grid of a built search (scaling's 10 x 10): time and actions run."""
        n = built["trials"]
        grid = grid_for(n)
        package = f"size_{n}"
        times, actions = [], []
        for rep in range(reps):
            wait_quiet(self.max_load, self.wait, self.log)
            bigger = {**grid, "a": [*grid["a"], f"new{rep}"]}
            self.ws.write(f"{package}/BUILD", search_build(bigger))
            elapsed, result = self.build(f"//{package}:s")
            times.append(elapsed)
            actions.append(result.executed())
            self.ws.write(f"{package}/BUILD", search_build(grid))
            self.build(f"//{package}:s")
        return {
            "trials": n,
            "cold": built["cold"],
            "cold_actions": built["actions"],
            "time": median(times),
            "runs": times,
            "actions": actions[0],
            "new_trials": n // len(grid["a"]),
        }

    max_load = 1.5
    wait = 120.0


def mnist(output_base: Path, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Cold builds of //mnist:bzl_search with --jobs=1 and 2, against the serial loop of bare processes."""
    ws = BenchWorkspace(REPO, output_base, convenience_symlinks=False)
    try:
        ws.build("//mnist:bzl_search")  # fetches the environment
        out: dict[str, Any] = {}
        for jobs in (1, 2):
            times = []
            for _ in range(reps):
                ws.bazel("clean", check=True)
                elapsed, result = timed(
                    lambda: ws.build("//mnist:bzl_search", flags=(f"--jobs={jobs}",))
                )
                times.append(elapsed)
                out["actions"] = result.executed()
            out[f"jobs{jobs}"] = median(times)
            out[f"jobs{jobs}_runs"] = times
            log(f"mnist --jobs={jobs}: {median(times):.1f} s")
        bazel = (f"--output_base={output_base}",)
        python = output_base / "external/databazel_python/venv/bin/python3"
        env = action_env("//mnist:bzl_training", ("bazel", *bazel))
        trials = json.loads(ws.bin("mnist/bzl_search.json").read_text())["trials"]
        data = REPO / "mnist/data/mnist.npz"
        loops = [mnist_loop(python, env, trials, data)[0] for _ in range(reps)]
        out["serial_loop"] = median(loops)
        out["serial_loop_runs"] = loops
        out["trials"] = len(trials)
        log(f"mnist serial loop: {median(loops):.1f} s")
        return out
    finally:
        ws.shutdown()


def tpe_part(
    output_base: Path, reps: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Part `tpe` (tools/bench/tpe.py), in this checkout, in the output base of part `mnist`."""
    ws = BenchWorkspace(REPO, output_base, convenience_symlinks=False)
    try:
        return tpe.measure(ws, reps, log, median)
    finally:
        ws.shutdown()


# ---------------------------------------------------------------------------


def _reexec_with_matplotlib() -> None:
    """Runs this script with .venv's interpreter when this one has no matplotlib (for the plot)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        venv = REPO / ".venv/bin/python"
        if venv.exists() and Path(sys.executable) != venv:
            os.execv(str(venv), [str(venv), __file__, *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one repeat, no MNIST"
    )
    parser.add_argument(
        "--reps", type=int, default=3, help="repeats (the median is reported)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "docs",
        help="where benchmarks.{md,json,png} go",
    )
    parser.add_argument(
        "--max-load",
        type=float,
        default=1.5,
        help="wait for a 1-minute load under this",
    )
    parser.add_argument(
        "--wait", type=float, default=60, help="longest wait for a quiet machine, s"
    )
    parser.add_argument("--no-mnist", action="store_true", help="skip the MNIST search")
    parser.add_argument(
        "--work", type=Path, help="scratch directory (default: a new temporary one)"
    )
    parser.add_argument(
        "--parts",
        type=lambda text: set(text.split(",")),
        help="run only these parts: overhead, overhead_sandboxed, trials, profile, cold_trivial, scaling, "
        "add_grid_value (needs scaling), analysis, analysis_profile (needs analysis), mnist, remote, "
        "halving, tpe, torch, rules_python",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
        args.no_mnist = True

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    work = args.work or Path(tempfile.mkdtemp(prefix="databazel-bench-"))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "args": "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "reps": args.reps,
        "max_load": args.max_load,
        "machine": machine(),
        "versions": versions(),
        "load_before": loadavg(),
        "notes": [],
    }
    previous = args.out / "benchmarks.json"
    if args.parts and previous.exists():
        # Re-running some parts: keep the other parts' figures, and say when each was measured.
        kept = json.loads(previous.read_text())
        parts = (
            "overhead",
            "overhead_sandboxed",
            "trials",
            "profile",
            "cold_trivial",
            "scaling",
            "add_grid_value",
            "analysis",
            "analysis_profile",
            "mnist",
            "remote",
            "halving",
            "tpe",
            "torch",
            "rules_python",
        )
        dates = kept.get("part_dates") or {n: kept["date"] for n in parts if n in kept}
        for name in set(kept) - set(results) - args.parts:
            results[name] = kept[name]
        results["part_dates"] = {
            **dates,
            **{name: results["date"] for name in args.parts},
        }
        results["notes"] = [
            n
            for n in kept.get("notes", [])
            if not any(f"`{p}`" in n for p in args.parts)
        ]
    ws = BenchWorkspace.fixture(
        work / "ws",
        work / "output_base",
        python_env='requirements_lock = "@databazel//:requirements_lock.txt",',
    )
    bench = Bench(ws, args.reps, log)
    bench.max_load, bench.wait = args.max_load, args.wait
    sizes = (2, 10) if args.quick else (10, 100, 1000)
    analysis_sizes = (2, 10) if args.quick else (1000, 10000, 50000)
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("overhead", lambda: bench.overhead(*((2, 6) if args.quick else (5, 20)))),
        ("overhead_sandboxed", lambda: bench.overhead(*((2, 6) if args.quick else (5, 20)), flags=SANDBOXED)),
        ("cold_trivial", lambda: bench.cold_trivial(5 if args.quick else 20)),
        ("scaling", lambda: bench.scaling(sizes)),
        ("add_grid_value", lambda: bench.add_grid_value(results["scaling"][-1 if args.quick else 1], args.reps)),
        ("analysis", lambda: bench.analysis(analysis_sizes, args.reps)),
    ]  # fmt: skip
    if not args.quick:
        parts.append(
            (
                "analysis_profile",
                lambda: bench.profile_analysis(analysis_sizes[1], work),
            )
        )
    if not args.no_mnist:
        parts.append(("trials", lambda: trials.measure(ws, args.reps, log)))
        parts.append(("profile", lambda: warm_profile.measure(ws, args.reps, log)))
        parts.append(("halving", lambda: halving.measure(ws, args.reps, log)))
        parts.append(("remote", lambda: remote.measure(ws, args.reps, log, work)))

    def run_part(name: str, function: Callable[[], Any]) -> None:
        if args.parts and name not in args.parts:
            return
        wait_quiet(args.max_load, args.wait, log)
        log(f"{name} (load average {loadavg()})")
        try:
            results[name] = function()
        except Exception as e:  # noqa: BLE001 - one failed part must not lose the others
            log(f"{name} failed: {type(e).__name__}: {e}")
            results["notes"].append(
                f"- `{name}` failed: {type(e).__name__}: {str(e)[:300]}"
            )

    try:
        if not args.parts or args.parts & {name for name, _ in parts}:
            log(f"fixture workspace in {work}; fetching its Python environment")
            bench.setup()
            for name, function in parts:
                run_part(name, function)
    finally:
        ws.remove()
    if not args.no_mnist:
        run_part("mnist", lambda: mnist(work / "mnist_output_base", args.reps, log))
        run_part("tpe", lambda: tpe_part(work / "mnist_output_base", args.reps, log))
        run_part(
            "torch",
            lambda: torch_search.measure(
                BenchWorkspace, work / "torch_output_base", args.reps, log
            ),
        )
        run_part(
            "rules_python",
            lambda: rules_python.measure(BenchWorkspace, work, args.reps, log),
        )
    results["load_after"] = loadavg()
    png = "benchmarks.png" if plot(results, args.out / "benchmarks.png") else None
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "benchmarks.md").write_text(render(results, png))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    for target, measured, met in verdicts(results):
        log(f"{target}: {measured} ({'met' if met == 'yes' else 'MISSED'})")
    log(f"wrote {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    _reexec_with_matplotlib()
    sys.exit(main())
