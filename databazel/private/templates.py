"""Command-line templates: the arguments a target's `args` gives its script.

A template is a list of strings (`model(args = [...])`, `evaluate(args =
[...])`, `hyperparam_search(train_args = [...], eval_args = [...])`). Each
string becomes exactly one argument of the script, never split and never seen
by a shell, after its placeholders are filled in:

    training:   {data} {model_output_path} {hyperparams} {hp.NAME}
                {epoch} {init_model_path}   (a model trained in epochs)
    evaluation: {model_path} {data_path} {output_dir} {metrics_file}

`{{` and `}}` are literal braces. A value is inserted as it is: braces in a
hyperparameter's value are not placeholders. In epoch 1 there is no
checkpoint to resume from: an argument holding `{init_model_path}` is left
out, and when the argument is the placeholder alone, so is the argument before
it if that is an option without placeholders (`"--resume-from",
"{init_model_path}"` gives nothing in epoch 1, `--resume-from PATH` later).

The rules check templates when the BUILD file is loaded (templates.bzl, with
the same grammar and messages); the runner checks them again, because a
`model` reading its hyperparameters from a file only knows their names when it
runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contract import ContractError

TRAIN_PLACEHOLDERS = (
    "data",
    "model_output_path",
    "hyperparams",
    "epoch",
    "init_model_path",
)
EVALUATE_PLACEHOLDERS = ("model_path", "data_path", "output_dir", "metrics_file")
HYPERPARAM_PREFIX = "hp."

# Linux's limit on one command-line argument (MAX_ARG_STRLEN, 32 pages, with
# its NUL byte); model.bzl's MAX_ARGUMENT_BYTES for the --hyperparams JSON.
MAX_ARGUMENT_BYTES = 128 * 1024


class TemplateError(ContractError):
    """A template that cannot be filled in."""


@dataclass(frozen=True)
class Placeholder:
    name: str


def parse(template: str) -> list[str | Placeholder]:
    """The literal text and placeholders of one template, in order.

    Raises TemplateError for unbalanced braces (messages as in templates.bzl).
    """
    pieces: list[str | Placeholder] = []
    text: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c in "{}" and template[i + 1 : i + 2] == c:
            text.append(c)
            i += 2
        elif c == "}":
            raise TemplateError(
                "has a `}` with no opening `{` (write `}}` for a literal `}`)"
            )
        elif c == "{":
            end = template.find("}", i + 1)
            inner = template.find("{", i + 1)
            if end < 0 or 0 <= inner < end:
                raise TemplateError(
                    "has a `{` with no closing `}` (write `{{` for a literal `{`)"
                )
            if text:
                pieces.append("".join(text))
                text = []
            pieces.append(Placeholder(template[i + 1 : end]))
            i = end + 1
        else:
            text.append(c)
            i += 1
    if text:
        pieces.append("".join(text))
    return pieces


def placeholder_names(templates: Sequence[str]) -> set[str]:
    """Every placeholder name the templates use (`hp.lr`, `data`, ...)."""
    return {p.name for t in templates for p in parse(t) if isinstance(p, Placeholder)}


def load_templates(text: str) -> list[str]:
    """The templates of the runner's `--args` (a JSON list of strings)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise TemplateError(f"--args must be a JSON list of strings, got {text!r}")
    return value


def _describe(templates: Sequence[str], index: int) -> str:
    return f"`args` entry {json.dumps(templates[index], ensure_ascii=False)}"


def fill(
    templates: Sequence[str],
    known: Sequence[str],
    values: Mapping[str, str | None],
    hyperparams: Mapping[str, str] | None = None,
) -> list[str]:
    """The script's arguments: one per template, its placeholders filled in.

    `known` are the placeholders of this kind of script (TRAIN_PLACEHOLDERS or
    EVALUATE_PLACEHOLDERS); `values` maps those this run has to their values,
    None for one whose argument is left out (`init_model_path` in epoch 1).
    `hyperparams` fill `{hp.NAME}` (training only; None: not allowed).
    """
    arguments: list[str] = []
    # Whether arguments[-1] is an option with no placeholder (`--resume-from`).
    last_is_option = False
    for index, template in enumerate(templates):
        try:
            pieces = parse(template)
        except TemplateError as e:
            raise TemplateError(f"{_describe(templates, index)} {e}") from None
        parts: list[str] = []
        omitted = False
        for piece in pieces:
            if isinstance(piece, str):
                parts.append(piece)
                continue
            value = _value(
                _describe(templates, index), piece.name, known, values, hyperparams
            )
            if value is None:
                omitted = True
            else:
                parts.append(value)
        if omitted:
            if last_is_option and len(pieces) == 1:
                arguments.pop()
            last_is_option = False
            continue
        argument = "".join(parts)
        if "\0" in argument:
            raise TemplateError(
                f"{_describe(templates, index)} holds a NUL byte once filled in, "
                "which no command-line argument can hold"
            )
        if len(argument.encode("utf-8", "surrogateescape")) >= MAX_ARGUMENT_BYTES:
            raise TemplateError(
                f"{_describe(templates, index)} fills in to "
                f"{len(argument.encode('utf-8', 'surrogateescape')):,} bytes, over "
                f"Linux's limit of {MAX_ARGUMENT_BYTES:,} bytes for one command-line "
                "argument (MAX_ARG_STRLEN); pass large values in a data file"
            )
        arguments.append(argument)
        last_is_option = all(
            isinstance(p, str) for p in pieces
        ) and argument.startswith("-")
    return arguments


def _value(
    where: str,
    name: str,
    known: Sequence[str],
    values: Mapping[str, str | None],
    hyperparams: Mapping[str, str] | None,
) -> str | None:
    """The value of placeholder `name` of the template entry `where` describes."""
    if name.startswith(HYPERPARAM_PREFIX) and hyperparams is not None:
        key = name[len(HYPERPARAM_PREFIX) :]
        if key not in hyperparams:
            have = ", ".join(sorted(hyperparams)) or "none"
            raise TemplateError(
                f"{where} uses `{{{name}}}`, but there is no hyperparameter "
                f"`{key}` (the hyperparameters are: {have})"
            )
        return hyperparams[key]
    if name not in known:
        listed = ", ".join(
            f"`{{{n}}}`"
            for n in (*known, *(["hp.NAME"] if hyperparams is not None else []))
        )
        raise TemplateError(
            f"{where} has the unknown placeholder `{{{name}}}`; this script's "
            f"placeholders are {listed} (write `{{{{` and `}}}}` for literal braces)"
        )
    if name not in values:
        raise TemplateError(
            f"{where} uses `{{{name}}}`, which only a model trained in epochs "
            "(`epochs = N`) has"
        )
    return values[name]
