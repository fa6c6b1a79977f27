"""The benchmarks' report: the targets met or missed, the tables and the plot.

tools/bench/run.py measures and keeps its results as JSON
(docs/benchmarks.json); this module turns them into docs/benchmarks.md and
docs/benchmarks.png. It prints only what was measured: a figure the bench could
not measure is said to be missing, never made up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import halving
import remote
import rules_python
import tpe
import torch_search
import trials
import warm_profile

TARGETS = {
    "cold": "cold MNIST search with --jobs=2 <= 0.6x the serial loop",
    "cold_trivial": "cold build of 1,000 trivial trials, default mode, <= 0.03 s a trial",
    "noop": "no-op rebuild of 1,000 trials <= 2 s",
    "analysis_ratio": "loading + analysis per trial <= 2x the plain-genrule baseline's (as many genrules as trial actions; between the two largest sizes)",
    "analysis": "loading + analysis of 50,000 trials <= 60 s",
    "memory": "Bazel server peak memory at 50,000 trials <= 4 GiB",
    "linear": "cost grows linearly with the number of trials",
}


# The bench writes no execution log (it would be much of what is measured).
NOT_PER_MNEMONIC = (
    "The actions run are Bazel's count of the processes it ran; the bench could "
    "not count them per mnemonic."
)


def _s(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each target that was measured."""
    rows = (
        trials.verdicts(results)
        + remote.verdicts(results)
        + rules_python.verdicts(results)
    )
    if "mnist" in results:
        m = results["mnist"]
        ratio = m["jobs2"] / m["serial_loop"]
        rows.append(
            (
                TARGETS["cold"],
                f"{m['jobs2']:.1f} s vs {m['serial_loop']:.1f} s = {ratio:.2f}x",
                "yes" if ratio <= 0.6 else "no",
            )
        )
    scaling = {r["trials"]: r for r in results.get("scaling", [])}
    if 1000 in scaling:
        per_trial = scaling[1000]["cold"] / 1000
        rows.append(
            (
                TARGETS["cold_trivial"],
                f"{per_trial:.3f} s",
                "yes" if per_trial <= 0.03 else "no",
            )
        )
        noop = scaling[1000]["noop"]
        rows.append((TARGETS["noop"], f"{noop:.2f} s", "yes" if noop <= 2 else "no"))
    analysis = {r["trials"]: r for r in results.get("analysis", [])}
    if len(analysis) >= 2:
        (n1, r1), (n2, r2) = sorted(analysis.items())[-2:]
        ours = (r2["databazel"]["time"] - r1["databazel"]["time"]) / (n2 - n1)
        theirs = (r2["genrules"]["time"] - r1["genrules"]["time"]) / (n2 - n1)
        if theirs > 0:
            rows.append(
                (
                    TARGETS["analysis_ratio"],
                    f"{ours * 1000:.2f} ms vs {theirs * 1000:.2f} ms a trial "
                    f"({n1:,} -> {n2:,}) = {ours / theirs:.1f}x",
                    "yes" if ours / theirs <= 2 else "no",
                )
            )
    if 50000 in analysis:
        a = analysis[50000]["databazel"]
        rows.append(
            (
                TARGETS["analysis"],
                f"{a['time']:.1f} s",
                "yes" if a["time"] <= 60 else "no",
            )
        )
        rss = a["peak_rss_mib"]
        rows.append(
            (TARGETS["memory"], f"{rss:.0f} MiB", "yes" if rss <= 4096 else "no")
        )
    growth = linearity(results)
    if growth:
        worst = max(g[2] for g in growth)
        rows.append(
            (
                TARGETS["linear"],
                f"per-trial cost at the largest size / at the next: at most {worst:.2f}",
                "yes" if worst <= 1.5 else "no",
            )
        )
    return rows


def linearity(results: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(figure, sizes, ratio of per-trial costs between the two largest sizes); 1 = linear, <1 = sublinear."""
    out = []

    def ratio(points: list[tuple[int, float]], name: str) -> None:
        points = sorted(p for p in points if p[1] == p[1])
        if len(points) >= 2:
            (n1, v1), (n2, v2) = points[-2], points[-1]
            if v1 > 0:
                out.append((name, f"{n1} -> {n2}", (v2 / n2) / (v1 / n1)))

    analysis = results.get("analysis", [])
    if analysis:
        ratio(
            [(r["trials"], r["databazel"]["time"]) for r in analysis],
            "loading + analysis time",
        )
        ratio(
            [(r["trials"], r["databazel"]["peak_rss_mib"]) for r in analysis],
            "server peak RSS",
        )
    scaling = results.get("scaling", [])
    if scaling:
        ratio([(r["trials"], r["cold"]) for r in scaling], "cold build time")
        ratio([(r["trials"], r["noop"]) for r in scaling], "no-op rebuild time")
    return out


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    analysis = results.get("analysis", [])
    scaling = results.get("scaling", [])
    if analysis:
        n = [r["trials"] for r in analysis]
        ax = axes[0]
        ax.plot(
            n,
            [r["databazel"]["time"] for r in analysis],
            "o-",
            label="databazel search",
        )
        ax.plot(
            n,
            [r["genrules"]["time"] for r in analysis],
            "s--",
            label="2N plain genrules",
        )
        ax.set_title("loading + analysis (fresh server)")
        ax.set_ylabel("seconds")
        ax = axes[1]
        ax.plot(
            n,
            [r["databazel"]["peak_rss_mib"] for r in analysis],
            "o-",
            label="databazel: peak RSS",
        )
        ax.plot(
            n,
            [r["genrules"]["peak_rss_mib"] for r in analysis],
            "s--",
            label="genrules: peak RSS",
        )
        ax.set_title("Bazel server memory")
        ax.set_ylabel("MiB")
    if scaling:
        n = [r["trials"] for r in scaling]
        ax = axes[2]
        ax.plot(n, [r["cold"] for r in scaling], "o-", label="cold build, --jobs=2")
        ax.plot(n, [r["noop"] for r in scaling], "o:", label="no-op rebuild")
        ax.plot(
            n,
            [r["empty_build"] for r in scaling],
            "s--",
            label="empty build (baseline)",
        )
        ax.set_title("trivial trials: build time")
        ax.set_ylabel("seconds")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trials")
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def render(results: dict[str, Any], png: str | None) -> str:
    m, v = results["machine"], results["versions"]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by tools/bench/run.py; do not edit by hand. Re-run it instead. -->",
        "",
        f"Measured {results['date']} by `tools/bench/run.py{results['args']}` "
        f"(median of {results['reps']} runs where not said otherwise).",
        "",
        "| Machine | Versions |",
        "| --- | --- |",
        f"| {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']} "
        f"| {v['bazel']}; Python {v['python']}; databazel {v['databazel']} |",
        "",
        f"Load average (1, 5, 15 min) before: {results['load_before']}, after: {results['load_after']}. "
        "The machine is shared: the bench waits (up to a limit) for the 1-minute load to drop under "
        f"{results['max_load']} before each part, and the load is recorded next to each figure.",
        "",
        "## Targets",
        "",
        "| Target | Measured | Met |",
        "| --- | --- | --- |",
    ]
    for target, measured, met in verdicts(results):
        lines.append(f"| {target} | {measured} | {met} |")
    lines.append("")
    lines += (
        trials.render(results)
        + warm_profile.render(results)
        + halving.render(results)
        + remote.render(results)
    )
    lines += tpe.render(results)
    if png:
        lines += [f"![benchmarks]({png})", ""]
    if "overhead" in results:
        o = results["overhead"]
        small, large = o["trials"]
        lines += [
            "## Per-trial overhead",
            "",
            f"Trivial trials (`#!/bin/sh` train and evaluate scripts writing a file). Through Bazel: "
            f"cold `--jobs=1` builds of fresh {small}- and {large}-trial searches, "
            f"(T({large}) - T({small})) / {large - small}, so fixed costs (the report, the client) cancel.",
            "",
            "| | seconds per trial (train + evaluate) |",
            "| --- | --- |",
            f"| the two scripts run directly as processes (baseline) | {o['direct']:.3f} |",
            f"| each script through `runner.py` (no Bazel) | {o['runner']:.3f} |",
            f"| through Bazel (`hyperparam_search`, `--jobs=1`, the default: warm) | {o['bazel']:.3f} "
            f"(runs: {', '.join(f'{x:.3f}' for x in o['bazel_per_trial'])}) |",
            f"| **overhead** (through Bazel - direct) | **{o['overhead']:.3f}** |",
            *(
                [
                    f"| through Bazel, sandboxed (`{' '.join(w['flags'])}`) | {w['bazel']:.3f} "
                    f"(runs: {', '.join(f'{x:.3f}' for x in w['bazel_per_trial'])}) |",
                    f"| **overhead, sandboxed** (through Bazel, sandboxed - direct) | **{w['overhead']:.3f}** |",
                ]
                if (w := results.get("overhead_sandboxed"))
                else []
            ),
            "",
            *(
                [
                    "CPU time per trial, which the load of other users' builds inflates much less than wall "
                    "time (Bazel server and every process it ran, from `/proc/<pid>/stat`; the direct runs from "
                    f"`getrusage`): scripts directly {o['cpu']['direct']:.3f} s, through `runner.py` "
                    f"{o['cpu']['runner']:.3f} s, through Bazel {o['cpu']['bazel']:.3f} s "
                    f"(runs: {', '.join(f'{x:.3f}' for x in o['cpu']['bazel_per_trial'])}).",
                    "",
                ]
                if "cpu" in o
                else []
            ),
            f"Run as processes of their own, the two runners cost {o['runner'] - o['direct']:.3f} s more "
            "than the scripts (two Python start-ups). A trial in a warm worker pays no runner start-up (its worker "
            "answers a request); what it pays is Bazel's per-action cost (scheduling, the worker "
            "request, the action cache) and the isolation of its script (a fork, the namespaces, a "
            "private execroot): part `profile` says how much of each. A sandboxed trial pays the "
            "start-ups and a sandbox that links every input; the trivial trials declare no package, "
            "so theirs hold a few files.",
            "",
        ]
    if "cold_trivial" in results or "mnist" in results:
        lines += [
            "## Cold search against a serial loop",
            "",
            "| Search | serial loop of bare processes | `--jobs=1` | `--jobs=2` | `--jobs=2` / loop |",
            "| --- | --- | --- | --- | --- |",
        ]
        if "mnist" in results:
            x = results["mnist"]
            lines.append(
                f"| `//mnist:bzl_search` ({x['trials']} trials + report + plots, {x['actions']} actions; "
                f"`bazel clean` first) | {x['serial_loop']:.1f} s | {x['jobs1']:.1f} s | {x['jobs2']:.1f} s "
                f"| {x['jobs2'] / x['serial_loop']:.2f} |"
            )
        if "cold_trivial" in results:
            x = results["cold_trivial"]
            lines.append(
                f"| {x['trials']} trivial trials (fresh package) | {x['serial_loop']:.2f} s | {x['jobs1']:.1f} s "
                f"| {x['jobs2']:.1f} s | {x['jobs2'] / x['serial_loop']:.0f} |"
            )
        lines += [
            "",
            "The serial loop runs the same scripts with the same interpreter and environment "
            "(`tools/bench/bare_loop.py`); it does not draw the report or the plots. With trivial "
            "scripts the loop costs milliseconds, so that row is databazel's and Bazel's own cost alone.",
            "",
        ]
    if "torch" in results:
        lines += torch_search.render(results["torch"])
    lines += rules_python.render(results)
    if "scaling" in results:
        lines += [
            "## Cold build and no-op rebuild by number of trials",
            "",
            "Trivial trials, one search per size. The no-op rebuild runs right after the cold build "
            "(server warm); the baseline is a build of an empty filegroup on the same server.",
            "",
            "| Trials | cold build `--jobs=2` | actions run | per trial | no-op rebuild | empty build (baseline) | load before / after |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results["scaling"]:
            lines.append(
                f"| {r['trials']:,} | {r['cold']:.1f} s | {r['actions']:,} | {r['cold'] / r['trials']:.3f} s "
                f"| {r['noop']:.2f} s | {r['empty_build']:.2f} s | {r['load'][0][0]} / {r['load'][1][0]} |"
            )
        lines.append("")
    if "analysis" in results:
        lines += [
            "## Loading + analysis and server memory by number of trials",
            "",
            "`bazel build --nobuild` on a fresh server (shut down and restarted first; start-up not "
            "timed). Peak memory is the server's peak RSS (`VmHWM`, JVM default maximum heap: 1/4 of RAM, "
            "so the JVM may hold more than it needs). Baseline (one run per size): a package of as many "
            "plain genrules as the search has trial actions (2 per trial).",
            "",
            "| Trials | databazel: time | peak RSS | 2N genrules: time | peak RSS | load before / after |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in results["analysis"]:
            d, g = r["databazel"], r["genrules"]
            lines.append(
                f"| {r['trials']:,} | {d['time']:.1f} s | {d['peak_rss_mib']:.0f} MiB "
                f"| {g['time']:.1f} s | {g['peak_rss_mib']:.0f} MiB "
                f"| {r['load'][0][0]} / {r['load'][1][0]} |"
            )
        lines.append("")
    profile = results.get("analysis_profile", "")
    if "PHASE SUMMARY" in profile:
        summary = profile.split("=== PHASE SUMMARY INFORMATION ===")[1].split(
            "Critical path"
        )[0]
        n = results["analysis"][-1]["trials"]
        lines += [
            f"`bazel analyze-profile` of the loading + analysis of {n:,} trials (`--profile`, fresh server):",
            "",
            "```",
            *[line.rstrip() for line in summary.strip().splitlines()],
            "```",
            "",
        ]
    growth = linearity(results)
    if growth:
        lines += [
            "## Growth",
            "",
            "Per-trial cost at the largest size divided by the per-trial cost at the size before it "
            "(1.0: linear; below 1: fixed costs still dominate).",
            "",
            "| Figure | sizes | ratio |",
            "| --- | --- | --- |",
        ]
        for name, sizes, r in growth:
            lines.append(f"| {name} | {sizes} | {r:.2f} |")
        lines.append("")
    if "add_grid_value" in results:
        a = results["add_grid_value"]
        lines += [
            "## Adding one grid value to a 100-trial search",
            "",
            f"A 10 x 10 grid, built; then one value added to the first hyperparameter "
            f"({a['new_trials']} new trials).",
            "",
            "| Build | time | actions run |",
            "| --- | --- | --- |",
            f"| the 100-trial search, cold (baseline) | {a['cold']:.1f} s | {a['cold_actions']} |",
            f"| after adding one value | {a['time']:.1f} s | {a['actions']} |",
            "",
            f"The least possible is {2 * a['new_trials'] + 1} actions: {a['new_trials']} "
            f"train, {a['new_trials']} evaluate and the report. {NOT_PER_MNEMONIC}",
            "",
        ]
    if results.get("part_dates"):
        lines += [
            "## When each part was measured",
            "",
            "Some parts were re-run with `--parts`; the others are from earlier runs.",
            "",
            *[
                f"- `{name}`: {date}"
                for name, date in sorted(results["part_dates"].items())
            ],
            "",
        ]
    if results.get("notes"):
        lines += ["## Notes", "", *results["notes"], ""]
    return "\n".join(lines)
