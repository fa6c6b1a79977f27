"""Benchmark part `remote`: the 12-trial MNIST search locally and on the loopback grid.

In the fixture workspace of the `trials` part (the MNIST scripts, the Python
environment of requirements_lock.txt), `//mnist12:s` (12 trials, their
evaluations and the report) is built:

* locally, sandboxed, `--jobs=2`, after `bazel clean`;
* remotely, cold: a new BuildGrid with two fixture workers (tools/buildgrid.sh,
  empty CAS, action cache and worker content caches), `bazel clean`, then
  `--config=remote`'s flags (.bazelrc) and `--jobs=8`;
* remotely, inputs seen: on the same grid, a search of 12 new trials (another
  `tol`) whose inputs (environment, scripts, data) are all in CAS and in the
  workers' content cache: every action runs, nothing is uploaded twice;
* remotely, served again: `bazel clean`, then `//mnist12:s` again: BuildGrid's
  action cache answers every action.

Per action, the workers' logs give what materialising the input root cost
(files, files fetched, seconds), the script's run and the output upload; the
cold build's gRPC log gives the number of ByteStream writes Bazel made against
the number of distinct blobs.
"""

from __future__ import annotations

import collections
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import median, median_of, processes

REPO = Path(__file__).resolve().parents[2]
TARGETS = {
    "first_try": "cold remote build of the MNIST search from an empty grid succeeds on the first try",
    "seen": "a worker materialises an input root it has seen in <= 0.2x the time of fetching it",
}  # fmt: skip
LOCAL_JOBS, REMOTE_JOBS = 2, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _grid(command: str, state: Path, *args: str) -> None:
    subprocess.run(
        [str(REPO / "tools/buildgrid.sh"), command, str(state), *args],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def worker_actions(state: Path) -> list[dict[str, float]]:
    """Per action the workers ran: files, fetched, MB fetched, inputs s, run s, upload s."""
    actions = []
    for log in sorted((state / "logs").glob("worker-*.log")):
        current: dict[str, float] = {}
        for line in log.read_text().splitlines():
            m = re.search(r"input root: (\d+) files, (\d+) fetched \(([\d.]+) MB\), \d+ directories fetched, in ([\d.]+)s", line)  # fmt: skip
            if m:
                current = {"files": int(m[1]), "fetched": int(m[2]), "mb": float(m[3]), "inputs": float(m[4])}  # fmt: skip
            m = re.search(r": ran action for .* in ([\d.]+)s platform=", line)
            if m and current:
                current["run"] = float(m[1])
            m = re.search(r"outputs uploaded in ([\d.]+)s", line)
            if m and "run" in current:
                current["upload"] = float(m[1])
                actions.append(current)
                current = {}
    return actions


def grpc_writes(log: Path) -> dict[str, int]:
    """ByteStream writes in Bazel's --experimental_remote_grpc_log, and distinct blobs written."""

    def varint(b: bytes, i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            c = b[i]
            i += 1
            value |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return value, i

    data, i = log.read_bytes(), 0
    writes: collections.Counter[bytes] = collections.Counter()
    failed = 0
    while i < len(data):
        n, i = varint(data, i)
        entry = data[i : i + n]
        i += n
        if b"google.bytestream.ByteStream/Write" in entry:
            m = re.search(rb"blobs/([0-9a-f]{64})/\d+", entry)
            if m:
                writes[m[1]] += 1
            failed += b"Concurrent RPC limit exceeded" in entry
    return {"writes": sum(writes.values()), "blobs": len(writes), "refused": failed}


def _build(ws: Any, target: str, *flags: str) -> tuple[float, Any]:
    start = time.perf_counter()
    result = ws.build(target, check=False, flags=flags)
    return time.perf_counter() - start, result


def measure(
    ws: Any, reps: int, log: Callable[[str], None], work: Path
) -> dict[str, Any]:
    import trials
    from bazel_harness import remote_flags

    trials.setup(ws)
    # 12 new trials with the same inputs as //mnist12:s (only `tol` differs).
    ws.write("mnistnew/BUILD", trials.search_build(12).replace('"0.0001"', '"0.00012"'))
    ws.build("//mnist12:s")  # the environment, once
    out: dict[str, Any] = {"local": [], "cold": [], "seen": [], "served": []}
    for rep in range(reps):
        ws.bazel("clean", check=True)
        elapsed, result = _build(ws, "//mnist12:s", f"--jobs={LOCAL_JOBS}")
        assert result.returncode == 0, result.stderr[-3000:]
        out["local"].append({"time": elapsed, "processes": processes(result)})
        log(f"remote: local --jobs={LOCAL_JOBS} {elapsed:.1f} s")

        state, port = work / f"grid-{rep}", _free_port()
        shutil.rmtree(state, ignore_errors=True)
        _grid("start", state, str(port), "2")
        try:
            flags = (*remote_flags(port), f"--jobs={REMOTE_JOBS}")
            grpc_log = work / f"grpc-{rep}.log"
            ws.bazel("clean", check=True)
            elapsed, result = _build(ws, "//mnist12:s", *flags, f"--experimental_remote_grpc_log={grpc_log}")  # fmt: skip
            cold = {
                "time": elapsed, "ok": result.returncode == 0, "processes": processes(result),
                "actions": worker_actions(state), **grpc_writes(grpc_log),
            }  # fmt: skip
            if not cold["ok"]:
                cold["error"] = result.stderr[-1500:]
            out["cold"].append(cold)
            log(f"remote: cold {elapsed:.1f} s ok={cold['ok']} ({cold['processes']})")
            grpc_log.unlink(missing_ok=True)

            before = len(worker_actions(state))
            elapsed, result = _build(ws, "//mnistnew:s", *flags)
            assert result.returncode == 0, result.stderr[-3000:]
            seen = {"time": elapsed, "processes": processes(result), "actions": worker_actions(state)[before:]}  # fmt: skip
            out["seen"].append(seen)
            log(f"remote: inputs seen {elapsed:.1f} s ({seen['processes']})")

            ws.bazel("clean", check=True)
            elapsed, result = _build(ws, "//mnist12:s", *flags)
            assert result.returncode == 0, result.stderr[-3000:]
            out["served"].append({"time": elapsed, "processes": processes(result)})
            log(f"remote: served again {elapsed:.1f} s ({processes(result)})")
        finally:
            _grid("stop", state)
            shutil.rmtree(state, ignore_errors=True)
    for key in ("local", "cold", "seen", "served"):
        out[f"{key}_time"] = median([r["time"] for r in out[key]])
    return out


def _cost(actions: list[dict[str, float]], fetched: bool) -> dict[str, Any]:
    """Medians over the actions that carry the environment, split by whether they fetched it."""
    rows = [a for a in actions if a["files"] > 1000 and (a["fetched"] > 100) == fetched]
    return {k: median_of(rows, k) for k in ("files", "fetched", "mb", "inputs", "run", "upload")} | {"n": len(rows)}  # fmt: skip


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    r = results.get("remote")
    if not r:
        return []
    ok = sum(c["ok"] for c in r["cold"])
    rows = [(TARGETS["first_try"], f"{ok} of {len(r['cold'])} cold builds", "yes" if ok == len(r["cold"]) else "no")]  # fmt: skip
    actions = [a for c in r["cold"] + r["seen"] for a in c["actions"]]
    fetch, link = _cost(actions, True)["inputs"], _cost(actions, False)["inputs"]
    if fetch and link is not None:
        rows.append((TARGETS["seen"], f"{link:.2f} s vs {fetch:.2f} s = {link / fetch:.2f}x", "yes" if link <= 0.2 * fetch else "no"))  # fmt: skip
    return rows


def render(results: dict[str, Any]) -> list[str]:
    r = results.get("remote")
    if not r:
        return []
    cold = r["cold"]
    actions = [a for c in cold + r["seen"] for a in c["actions"]]
    fetch, link = _cost(actions, True), _cost(actions, False)
    n = len(r["local"])
    lines = [
        "## MNIST search: local and remote",
        "",
        f"`//mnist12:s` of the `trials` part (12 trials, 12 evaluations, the report) in the fixture "
        f"workspace. Local: sandboxed, `--jobs={LOCAL_JOBS}`. Remote: BuildGrid 0.2.53 and two fixture "
        f"workers on loopback (`tools/buildgrid.sh`), `--config=remote`'s flags, `--jobs={REMOTE_JOBS}`, "
        f"on the same machine as Bazel. Median of {n} run(s); every build after `bazel clean`.",
        "",
        "| Build | Time | Processes |",
        "| --- | --- | --- |",
        f"| local, `--jobs={LOCAL_JOBS}` | {r['local_time']:.1f} s | {r['local'][-1]['processes']} |",
        f"| remote, cold: empty grid (uploads the environment, workers fetch it) | {r['cold_time']:.1f} s | {cold[-1]['processes']} |",
        f"| remote, inputs seen: 12 new trials, inputs in CAS and the workers' content cache | {r['seen_time']:.1f} s | {r['seen'][-1]['processes']} |",
        f"| remote, served again from BuildGrid's action cache | {r['served_time']:.1f} s | {r['served'][-1]['processes']} |",
        "",
        "Remote cost per action, on the worker (medians over the train and evaluate actions, "
        "which carry scikit-learn and its requirements):",
        "",
        "| Input root | Actions | Files | Fetched | Materialise | Script | Upload outputs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for name, c in (("fetched (first sight: what every action cost before the content cache)", fetch), ("seen (hard links from the content cache)", link)):  # fmt: skip
        if c["n"]:
            lines.append(
                f"| {name} | {c['n']} | {c['files']:,.0f} | {c['fetched']:,.0f} ({c['mb']:.0f} MB) "
                f"| {c['inputs']:.2f} s | {c['run']:.1f} s | {c['upload']:.2f} s |"
            )  # fmt: skip
    writes = cold[-1]
    lines += [
        "",
        f"Bazel's side of the cold build (gRPC log): {writes['writes']:,} ByteStream writes for "
        f"{writes['blobs']:,} distinct blobs ({writes['writes'] / max(writes['blobs'], 1):.1f} each: "
        f"Bazel 4.2 uploads whatever FindMissingBlobs reported missing for each action, unless the "
        f"same upload is still in flight), {writes['refused']} refused by BuildGrid "
        f"(`Concurrent RPC limit exceeded`). Cold builds that succeeded: "
        f"{sum(c['ok'] for c in cold)} of {len(cold)}.",
        "",
    ]  # fmt: skip
    return lines
