"""Benchmark part `torch`: the PyTorch search, //torch_digits:search, sandboxed and warm.

In this checkout with an output base of its own: a first build installs
@databazel_torch (its time and size are recorded), then each mode builds the
search after `bazel clean` (which also stops the workers, so the warm builds
pay their start-up: one torch import per worker), `--jobs=2`.

`measure()` returns plain data; `render()` turns it into Markdown rows.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# In this checkout databazel is the main repository: `--@databazel//...` would
# name a setting Bazel 4.2 does not match to it, so use the .bazelrc config.
# This checkout: the flag's label has no repository name.
SANDBOXED = "--//databazel:warm=false"
TARGET = "//torch_digits:search"


def _size_mib(path: Path) -> tuple[float, int]:
    """(MiB, files) under `path`."""
    out = subprocess.run(
        ["du", "-sm", str(path)], capture_output=True, text=True, check=True
    ).stdout
    files = sum(1 for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return float(out.split()[0]), files


def measure(
    workspace_class: Any, output_base: Path, reps: int, log: Callable[[str], None]
) -> dict[str, Any]:
    ws = workspace_class(REPO, output_base, convenience_symlinks=False)
    try:
        ws.build("//mnist:bzl_training")  # @databazel_python, not timed
        start = time.monotonic()
        ws.bazel("fetch", "@databazel_torch//:torch", check=True)
        out: dict[str, Any] = {"install": time.monotonic() - start}
        env = output_base / "external/databazel_torch"
        out["env_mib"], out["env_files"] = _size_mib(env)
        log(f"torch install: {out['install']:.1f} s, {out['env_mib']:.0f} MiB")
        ws.build(TARGET)  # the data, the plots' matplotlib: not timed
        for mode, flags in (("sandboxed", (SANDBOXED,)), ("warm", ())):
            times = []
            for _ in range(reps):
                ws.bazel("clean", check=True)
                start = time.monotonic()
                result = ws.build(TARGET, flags=("--jobs=2", *flags))
                times.append(time.monotonic() - start)
                out["actions"] = result.executed()
                line = re.search(r"INFO: \d+ processes: [^\n]*", result.stderr)
                out[f"{mode}_processes"] = line.group(0)[6:] if line else None
                if (mode == "warm") != bool(line and " worker" in line.group(0)):
                    raise RuntimeError(
                        f"the {mode} build ran: {out[f'{mode}_processes']}"
                    )
            times.sort()
            out[mode] = times[len(times) // 2]
            out[f"{mode}_runs"] = times
            log(f"torch search {mode}: {out[mode]:.1f} s")
        return out
    finally:
        ws.shutdown()


def render(x: dict[str, Any]) -> list[str]:
    return [
        "## The PyTorch search",
        "",
        f"`{TARGET}`: 4 trials x 3 epochs of a small CNN on the digits, every epoch evaluated "
        f"({x['actions']} actions with the report and its plots), `--jobs=2`, `bazel clean` first "
        "(the warm builds start their workers, each importing torch once).",
        "",
        "| | Time |",
        "| --- | --- |",
        f"| installing @databazel_torch (first build only; {x['env_mib']:.0f} MiB, "
        f"{x['env_files']:,} files) | {x['install']:.1f} s |",
        f"| sandboxed (`{SANDBOXED}`; {x.get('sandboxed_processes')}) | {x['sandboxed']:.1f} s |",
        f"| warm (the default; {x.get('warm_processes')}) | {x['warm']:.1f} s |",
        "",
    ]
