"""Draw the PNG plots of a search report with matplotlib.

Bazel runs this tool (through tool.py) as::

    python3 tool.py plot --target //pkg:search --report R.json \\
        [--single HP=OUT.png ...] [--pair HP1,HP2=OUT.png] \\
        [--learning-curve OUT.png]

R.json is report.py's JSON report.  ``--single`` draws the ranking metric
against one hyperparameter (every successful trial is a point; the best value
per hyperparameter value is joined by a line; the best trial is a star).
``--pair`` draws the metric over two hyperparameters: a heatmap when the trials
form a full grid over them (cells of failed trials are marked), a scatter plot
coloured by the metric otherwise.  ``--learning-curve`` draws the metric
against the epoch, one line per trial with a learning curve (a curve that is
the beginning of another one, as for trials sharing a chain of epochs, is
drawn once, as part of the longer one).  A hyperparameter whose values are all
numbers gets a numeric axis (logarithmic when they are positive and span a
factor of 100 or more); otherwise its values are categories, in order of first
appearance.

Unlike runner.py and report.py this script needs matplotlib, so it runs as its
own action and only for searches with ``plots = True``.  The images are
deterministic: fixed size and resolution, no timestamp or version metadata.
On any error no image is written and one ``databazel: error: <target>: ...``
line is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from typing import Any


from contract import RunnerError
from outputs import run_tool, replace_atomic

FIGSIZE = (6.4, 4.8)
DPI = 100
LOG_SPAN = 100.0
MAX_LEGEND = 12  # learning curves named in the legend


def _as_float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class Axis:
    """How one hyperparameter's values are placed on an axis."""

    def __init__(self, name: str, values: list[str]) -> None:
        self.name = name
        numbers = [_as_float(v) for v in values]
        self.numeric = bool(values) and all(n is not None for n in numbers)
        floats = [n for n in numbers if n is not None]
        self.log = (
            self.numeric and min(floats) > 0 and max(floats) / min(floats) >= LOG_SPAN
        )
        distinct = list(dict.fromkeys(values))
        if self.numeric:
            distinct.sort(key=float)
        self.categories = distinct

    def position(self, value: str) -> float:
        if self.numeric:
            return float(value)
        return float(self.categories.index(value))

    def apply(self, ax: Any, which: str) -> None:
        set_label = ax.set_xlabel if which == "x" else ax.set_ylabel
        set_label(self.name)
        if self.log:
            (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        if not self.numeric:
            ticks = ax.set_xticks if which == "x" else ax.set_yticks
            ticks(range(len(self.categories)), self.categories)


def load_report(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            report: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as e:
        raise RunnerError(f"cannot read the report {path}: {e}") from None
    return report


def _ok(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in report["trials"] if t.get("status", "ok") == "ok"]


def _title(report: dict[str, Any], text: str) -> str:
    return f"{report['search']}: {text}"


def _save(fig: Any, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    replace_atomic(
        path,
        lambda tmp: fig.savefig(
            tmp, format="png", dpi=DPI, metadata={"Software": None}
        ),
    )


def plot_single(plt: Any, report: dict[str, Any], name: str, path: str) -> None:
    """The metric against one hyperparameter."""
    metric, mode = report["metric"], report["mode"]
    trials = _ok(report)
    axis = Axis(name, [t["hyperparams"].get(name, "") for t in trials])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    xs = [axis.position(t["hyperparams"].get(name, "")) for t in trials]
    ys = [t["metrics"][metric] for t in trials]
    ax.scatter(xs, ys, color="tab:blue", alpha=0.6, label="trials")
    best_per_value: dict[float, float] = {}
    for x, y in zip(xs, ys):
        current = best_per_value.get(x)
        if current is None or (y > current if mode == "max" else y < current):
            best_per_value[x] = y
    if len(best_per_value) < len(xs):  # several trials per value: join the best ones
        line = sorted(best_per_value.items())
        ax.plot(
            [p[0] for p in line],
            [p[1] for p in line],
            color="tab:blue",
            label=f"best per {name}",
        )
    best = report["best"]
    ax.scatter(
        [axis.position(best["hyperparams"].get(name, ""))],
        [best["metrics"][metric]],
        marker="*",
        s=250,
        color="tab:red",
        zorder=3,
        label="best trial",
    )
    axis.apply(ax, "x")
    ax.set_ylabel(f"{metric} ({mode})")
    ax.set_title(_title(report, f"{metric} vs {name}"), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_pair(plt: Any, report: dict[str, Any], names: list[str], path: str) -> None:
    """The metric over two hyperparameters: a heatmap for a full grid, else a scatter plot."""
    metric, mode = report["metric"], report["mode"]
    first, second = names
    everything = report["trials"]
    x_axis = Axis(first, [t["hyperparams"].get(first, "") for t in everything])
    y_axis = Axis(second, [t["hyperparams"].get(second, "") for t in everything])
    cells = {
        (t["hyperparams"].get(first, ""), t["hyperparams"].get(second, ""))
        for t in everything
    }
    full_grid = (
        len(cells) == len(everything) == len(x_axis.categories) * len(y_axis.categories)
    )
    fig, ax = plt.subplots(figsize=FIGSIZE)
    cmap = "viridis" if mode == "max" else "viridis_r"
    if full_grid:
        nan = float("nan")
        grid = [[nan] * len(x_axis.categories) for _ in y_axis.categories]
        failed: list[tuple[int, int]] = []
        for t in everything:
            col = x_axis.categories.index(t["hyperparams"].get(first, ""))
            row = y_axis.categories.index(t["hyperparams"].get(second, ""))
            if t.get("status", "ok") == "ok":
                grid[row][col] = t["metrics"][metric]
            else:
                failed.append((row, col))
        image = ax.imshow(grid, cmap=cmap, origin="lower", aspect="auto")
        for row, values in enumerate(grid):
            for col, value in enumerate(values):
                if not math.isnan(value):
                    shade = (
                        image.norm(value) if mode == "max" else 1 - image.norm(value)
                    )
                    color = "black" if shade > 0.6 else "white"  # readable on viridis
                    ax.text(
                        col,
                        row,
                        f"{value:.4g}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color=color,
                    )
        for row, col in failed:
            ax.text(
                col,
                row,
                "failed",
                ha="center",
                va="center",
                fontsize=8,
                color="tab:red",
            )
        ax.set_xticks(range(len(x_axis.categories)), x_axis.categories)
        ax.set_yticks(range(len(y_axis.categories)), y_axis.categories)
        ax.set_xlabel(first)
        ax.set_ylabel(second)
    else:
        trials = _ok(report)
        xs = [x_axis.position(t["hyperparams"].get(first, "")) for t in trials]
        ys = [y_axis.position(t["hyperparams"].get(second, "")) for t in trials]
        image = ax.scatter(
            xs, ys, c=[t["metrics"][metric] for t in trials], cmap=cmap, s=60
        )
        x_axis.apply(ax, "x")
        y_axis.apply(ax, "y")
        ax.grid(True, alpha=0.3)
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(_title(report, f"{metric} over {first} and {second}"), fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _curve(trial: dict[str, Any], metric: str) -> list[tuple[int, float]]:
    return [
        (point["epoch"], point["metrics"][metric])
        for point in trial.get("learning_curve", [])
        if metric in point["metrics"]
    ]


def plot_learning_curve(plt: Any, report: dict[str, Any], path: str) -> None:
    """The metric against the epoch, one line per trial (nested curves once).

    Trials that early stopping stopped are drawn too: their lines end at the
    last epoch they trained, with an `x`.
    """
    metric, mode = report["metric"], report["mode"]
    drawn = [t for t in report["trials"] if t.get("status", "ok") in ("ok", "stopped")]
    stopped = {t["name"] for t in drawn if t.get("status") == "stopped"}
    curves = [(t["name"], _curve(t, metric)) for t in drawn]
    curves = [(name, curve) for name, curve in curves if curve]
    shown = [
        (name, curve)
        for name, curve in curves
        if not any(
            len(other) > len(curve) and other[: len(curve)] == curve
            for _, other in curves
        )
    ]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for index, (name, curve) in enumerate(shown):
        ax.plot(
            [p[0] for p in curve],
            [p[1] for p in curve],
            marker="o",
            markersize=3,
            linestyle="--" if name in stopped else "-",
            label=name if index < MAX_LEGEND else None,
        )
        if name in stopped:
            ax.plot([curve[-1][0]], [curve[-1][1]], marker="x", color="black")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} ({mode})")
    ax.set_title(_title(report, f"learning curves: {metric} vs epoch"), fontsize=10)
    ax.grid(True, alpha=0.3)
    if shown:
        ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _spec(text: str, count: int, outputs: list[str]) -> tuple[list[str], str]:
    """`HP=OUT` (count 1) or `HP1,HP2=OUT` (count 2); OUT is added to `outputs`."""
    names, sep, path = text.partition("=")
    parts = names.split(",")
    if not sep or not path or len(parts) != count or not all(parts):
        form = "HP=OUT.png" if count == 1 else "HP1,HP2=OUT.png"
        raise RunnerError(f"bad plot argument {json.dumps(text)}; expected {form}")
    outputs.append(path)
    return parts, path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot.py", description="databazel search plots"
    )
    parser.add_argument("--target", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--single", action="append", default=[], metavar="HP=OUT")
    parser.add_argument("--pair", action="append", default=[], metavar="HP1,HP2=OUT")
    parser.add_argument("--learning-curve", default=None, metavar="OUT")
    return parser


def import_pyplot(config_dir: str) -> Any:
    """matplotlib.pyplot with the Agg backend, its config and font cache in `config_dir`."""
    os.environ["MPLCONFIGDIR"] = config_dir
    os.environ["XDG_CACHE_HOME"] = (
        config_dir  # fontconfig's cache, when matplotlib asks it
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RunnerError(
            f"plots = True needs matplotlib ({e}); add it to the search's "
            '`plot_deps` (for example `plot_deps = ["@<env>//:matplotlib"]`, with '
            "matplotlib in the requirements lock of the registered python_env), or "
            "set plots = False"
        ) from None
    return plt


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    outputs: list[str] = []
    config_dir = tempfile.mkdtemp(prefix="databazel-mpl-")

    def work() -> None:
        singles = [_spec(s, 1, outputs) for s in args.single]
        pairs = [_spec(p, 2, outputs) for p in args.pair]
        if args.learning_curve:
            outputs.append(args.learning_curve)
        report = load_report(args.report)
        plt = import_pyplot(config_dir)
        for names, path in singles:
            plot_single(plt, report, names[0], path)
        for names, path in pairs:
            plot_pair(plt, report, names, path)
        if args.learning_curve:
            plot_learning_curve(plt, report, args.learning_curve)

    try:
        return run_tool(args.target, "plots", outputs, work)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
