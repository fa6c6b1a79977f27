"""What the benchmark parts share: statistics, timing, the machine's load, the modes.

run.py is the command; each part (trials.py, halving.py, ...) imports this,
never run.py (which runs as `__main__`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

# The modes a trial runs in, as flags of a fixture workspace (databazel is
# `@databazel` there): warm workers, isolated (the default); a new process
# per trial in Bazel's sandbox; warm without databazel's isolation.
SANDBOXED = ("--@databazel//databazel:warm=false",)
UNISOLATED = ("--@databazel//databazel:isolate=false",)
MODES = {"warm": (), "sandboxed": SANDBOXED, "unisolated": UNISOLATED}
# The same in this checkout, where the flags' labels have no repository name.
REPO_MODES = {"warm": (), "sandboxed": ("--//databazel:warm=false",)}
MODE_NAMES = {
    "warm": "warm (the default)",
    "sandboxed": "sandboxed (`warm=false`)",
    "unisolated": "warm, unisolated (`isolate=false`)",
}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_of(rows: Sequence[dict[str, float]], key: str) -> float | None:
    """The median of `key` over the rows that have it (None: none has)."""
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else None


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def wait_quiet(max_load: float, timeout: float, log: Callable[[str], None]) -> float:
    """Waits (up to `timeout` s) for the 1-minute load average to drop under `max_load`; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        one = os.getloadavg()[0]
        if one <= max_load or time.monotonic() >= deadline:
            return round(one, 2)
        log(f"load average {one:.2f} > {max_load}: waiting for a quieter machine")
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))


def processes(result: Any) -> str:
    """Bazel's `N processes: ...` summary of a build."""
    return result.stderr.rsplit("processes:", 1)[-1].split("\n", 1)[0].strip()
