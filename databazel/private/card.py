"""Lineage cards: what a model file is and what it was built from, as JSON.

Three subcommands, one per rule that writes cards::

    tool.py card model --target LABEL --output OUT --model PAIR --hyperparams-file F
        --script PAIR --data PAIR... [--dist-info NAME-VERSION...]
        [--epoch K] [--resumed-from PAIR]
    tool.py card evaluated --target LABEL --output OUT --card MODEL_CARD --metrics M
    tool.py card best --target LABEL --output OUT --report R --best-model PAIR
        --metric NAME --mode MODE --trial QUAD...

A PAIR is a JSON list ``[short_path, exec_path]``: the card records the short
path (the file's path in the workspace, stable across machines) and the sha256
of the file at the exec path. A QUAD is ``[model_label, model_card,
metrics_file, evaluation_label]``. ``--dist-info`` takes the names of the
``*.dist-info`` directories among the training action's Python inputs; they
give the card's ``python_packages``. The card is canonical JSON (sorted keys,
no timestamps, no absolute paths), so the same inputs give the same bytes.
Stdlib only; on error nothing is written and one ``databazel: error:`` line is
printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from collections.abc import Iterable
from typing import Any


from contract import RunnerError, parse_hyperparams
from outputs import fail_without_outputs, write_atomic
from records import (
    parse_evaluation,
    read_failed_model,
    read_stopped_model,
)

CARD_FORMAT = "databazel-card/1"


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_pair(text: str) -> tuple[str, str]:
    """A PAIR argument as (short_path, exec_path)."""
    value = json.loads(text)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, str) for v in value)
    ):
        raise RunnerError(f"expected [short_path, exec_path], got {text}")
    return value[0], value[1]


def file_entries(short: str, path: str) -> list[dict[str, str]]:
    """{path, sha256} of a file, or of every file under a directory (sorted)."""
    if not os.path.isdir(path):
        return [{"path": short, "sha256": sha256_file(path)}]
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            entries.append({"path": f"{short}/{rel}", "sha256": sha256_file(full)})
    return entries


def normalize_distribution(name: str) -> str:
    """A distribution's name as PEP 503 writes it: `scikit_learn` -> `scikit-learn`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def python_packages(dist_info_dirs: Iterable[str]) -> dict[str, str]:
    """{distribution: version} from `name-version.dist-info` directory names."""
    packages = {}
    for directory in dist_info_dirs:
        stem = (
            directory[: -len(".dist-info")] if directory.endswith(".dist-info") else ""
        )
        name, dash, version = stem.rpartition("-")
        if dash and name and version:
            packages[normalize_distribution(name)] = version
    return dict(sorted(packages.items()))


def format_card(card: dict[str, Any]) -> str:
    return json.dumps(card, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _model_status(path: str) -> str:
    """`failed` (a failure record), `stopped` (early stopping's record) or `ok`."""
    if read_failed_model(path) is not None:
        return "failed"
    return "stopped" if read_stopped_model(path) is not None else "ok"


def model_card(args: argparse.Namespace) -> dict[str, Any]:
    """The card of one model file (or checkpoint) of a `model` target."""
    short, path = parse_pair(args.model)
    with open(args.hyperparams_file, encoding="utf-8") as f:
        hyperparams = parse_hyperparams(f.read())
    resumed = None
    if args.resumed_from:
        resumed = file_entries(*parse_pair(args.resumed_from))[0]
    script = file_entries(*parse_pair(args.script))
    return {
        "format": CARD_FORMAT,
        "label": args.target,
        "model": {"path": short, "sha256": sha256_file(path)},
        "status": _model_status(path),
        "epoch": args.epoch,
        "resumed_from": resumed,
        "hyperparams": hyperparams,
        "training_data": [
            entry for pair in args.data for entry in file_entries(*parse_pair(pair))
        ],
        "script": script[0] if len(script) == 1 else script,
        "python_packages": python_packages(args.dist_info),
        "evaluation": None,
        "search": None,
    }


def read_card(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        card = json.load(f)
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise RunnerError(f"{path} is not a {CARD_FORMAT} card")
    return card


def evaluation(label: str, metrics_path: str) -> dict[str, Any]:
    """The card's `evaluation`: its label and metrics, or the failure it recorded."""
    with open(metrics_path, encoding="utf-8") as f:
        result = parse_evaluation(f.read())
    if result["failure"] is not None:
        return {"label": label, "failure": dict(result["failure"])}
    if result["stop"] is not None:
        return {"label": label, "stopped": dict(result["stop"])}
    return {"label": label, "metrics": result["metrics"]}


def evaluated_card(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluated model's card with the evaluation's metrics."""
    card = read_card(args.card)
    card["evaluation"] = evaluation(args.target, args.metrics)
    return card


def best_card(args: argparse.Namespace) -> dict[str, Any]:
    """The card of a search's best model: the winning trial's, evaluated, for the copy."""
    with open(args.report, encoding="utf-8") as f:
        best = json.load(f)["best"]
    trials = {}
    for text in args.trial:
        quad = json.loads(text)
        trials[quad[0]] = quad
    if best["label"] not in trials:
        raise RunnerError(f"the report's best trial {best['label']} is not a trial")
    _label, card_path, metrics_path, eval_label = trials[best["label"]]
    card = read_card(card_path)
    short, path = parse_pair(args.best_model)
    copy = {"path": short, "sha256": sha256_file(path)}
    if copy["sha256"] != card["model"]["sha256"]:
        raise RunnerError(
            f"{short} is not a copy of {card['model']['path']}: sha256 {copy['sha256']} "
            f"differs from the trial's {card['model']['sha256']}"
        )
    card["evaluation"] = evaluation(eval_label, metrics_path)
    card["search"] = {
        "label": args.target,
        "metric": args.metric,
        "mode": args.mode,
        "trial": best["label"],
        "trial_model": card["model"]["path"],
    }
    card["model"] = copy
    return card


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="card.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model")
    evaluated = sub.add_parser("evaluated")
    best = sub.add_parser("best")
    for p in (model, evaluated, best):
        p.add_argument("--target", required=True)
        p.add_argument("--output", required=True)
    model.add_argument("--model", required=True, metavar="PAIR")
    model.add_argument("--hyperparams-file", required=True)
    model.add_argument("--script", required=True, metavar="PAIR")
    model.add_argument("--data", action="append", default=[], metavar="PAIR")
    model.add_argument("--dist-info", action="append", default=[])
    model.add_argument("--epoch", type=int)
    model.add_argument("--resumed-from", metavar="PAIR")
    evaluated.add_argument("--card", required=True)
    evaluated.add_argument("--metrics", required=True)
    best.add_argument("--report", required=True)
    best.add_argument("--best-model", required=True, metavar="PAIR")
    best.add_argument("--metric", required=True)
    best.add_argument("--mode", required=True)
    best.add_argument("--trial", action="append", default=[], metavar="QUAD")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    make = {"model": model_card, "evaluated": evaluated_card, "best": best_card}
    try:
        write_atomic(args.output, format_card(make[args.command](args)))
        return 0
    except (RunnerError, OSError, ValueError, KeyError, TypeError) as e:
        message = f"cannot write the lineage card {args.output}: {e}"
    return fail_without_outputs(args.target, message, [args.output])
