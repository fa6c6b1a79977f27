"""Tests for databazel/private/templates.py: parsing and filling in command-line templates."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import templates
from templates import (
    EVALUATE_PLACEHOLDERS,
    TRAIN_PLACEHOLDERS,
    Placeholder,
    TemplateError,
    fill,
    parse,
)

CASES_FILE = Path(__file__).resolve().parents[1] / "starlark" / "template_cases.bzl"


def shared_cases() -> list[list]:
    """TEMPLATE_CASES of tests/starlark/template_cases.bzl, which templates.bzl is tested against."""
    text = CASES_FILE.read_text(encoding="utf-8")
    return ast.literal_eval(text.split("TEMPLATE_CASES = ", 1)[1])


@pytest.mark.parametrize(("template", "placeholders", "error"), shared_cases())
def test_parses_as_the_load_time_check_does(
    template: str, placeholders: list[str] | None, error: str
) -> None:
    if placeholders is None:
        with pytest.raises(TemplateError) as raised:
            parse(template)
        assert str(raised.value) == error
    else:
        names = [p.name for p in parse(template) if isinstance(p, Placeholder)]
        assert names == placeholders


def test_literal_text_and_braces() -> None:
    assert parse('--json={{"a": {hp.a}}}') == [
        '--json={"a": ',
        Placeholder("hp.a"),
        "}",
    ]


TRAIN_VALUES = {
    "data": "pkg/data.csv",
    "model_output_path": "bazel-out/k8/bin/pkg/m.model",
    "hyperparams": '{"batch_size":"32","lr":"0.01"}',
}
HYPERPARAMS = {"lr": "0.01", "batch_size": "32"}


def test_each_template_is_one_argument() -> None:
    args = fill(
        [
            "--lr={hp.lr}",
            "--batch-size={hp.batch_size}",
            "--train",
            "{data}",
            "--out={model_output_path}",
            "--params={hyperparams}",
            "a b; $(rm -rf /) {{x}}",
        ],
        TRAIN_PLACEHOLDERS,
        TRAIN_VALUES,
        HYPERPARAMS,
    )
    assert args == [
        "--lr=0.01",
        "--batch-size=32",
        "--train",
        "pkg/data.csv",
        "--out=bazel-out/k8/bin/pkg/m.model",
        '--params={"batch_size":"32","lr":"0.01"}',
        "a b; $(rm -rf /) {x}",
    ]


def test_values_are_inserted_verbatim_never_parsed_again() -> None:
    hostile = {"lr": "{data}", "batch_size": "'; echo pwned\n}}{"}
    args = fill(
        ["{hp.lr}", "--b={hp.batch_size}", "{model_output_path}"],
        TRAIN_PLACEHOLDERS,
        TRAIN_VALUES,
        hostile,
    )
    assert args == [
        "{data}",
        "--b='; echo pwned\n}}{",
        TRAIN_VALUES["model_output_path"],
    ]


def test_empty_template_and_empty_values_stay_arguments() -> None:
    args = fill(
        ["", "{hp.lr}", "{model_output_path}"],
        TRAIN_PLACEHOLDERS,
        TRAIN_VALUES,
        {"lr": ""},
    )
    assert args == ["", "", TRAIN_VALUES["model_output_path"]]


EPOCHS = [
    "--epoch",
    "{epoch}",
    "--resume-from",
    "{init_model_path}",
    "{model_output_path}",
]


def test_epoch_one_leaves_out_the_checkpoint_and_its_option() -> None:
    first = dict(TRAIN_VALUES, epoch="1", init_model_path=None)
    assert fill(EPOCHS, TRAIN_PLACEHOLDERS, first, HYPERPARAMS) == [
        "--epoch",
        "1",
        TRAIN_VALUES["model_output_path"],
    ]
    later = dict(TRAIN_VALUES, epoch="2", init_model_path="pkg/m.epoch-1.model")
    assert fill(EPOCHS, TRAIN_PLACEHOLDERS, later, HYPERPARAMS) == [
        "--epoch",
        "2",
        "--resume-from",
        "pkg/m.epoch-1.model",
        TRAIN_VALUES["model_output_path"],
    ]


@pytest.mark.parametrize(
    ("template", "first_epoch"),
    [
        # One argument holding the placeholder: only it goes.
        (["--resume-from={init_model_path}", "{epoch}"], ["1"]),
        (["--resume", "--from={init_model_path}", "{epoch}"], ["--resume", "1"]),
        # A positional path alone; the argument before it is no option.
        (["train", "{init_model_path}", "{epoch}"], ["train", "1"]),
        # The option before it has a placeholder: it is kept.
        (["--epoch={epoch}", "{init_model_path}"], ["--epoch=1"]),
        (["{init_model_path}", "{epoch}"], ["1"]),
    ],
)
def test_what_epoch_one_leaves_out(template: list[str], first_epoch: list[str]) -> None:
    values = dict(TRAIN_VALUES, epoch="1", init_model_path=None)
    assert fill(template, TRAIN_PLACEHOLDERS, values, HYPERPARAMS) == first_epoch


def test_evaluation_placeholders() -> None:
    values = {
        "model_path": "m.model",
        "data_path": "test.csv",
        "output_dir": "out/e.outputs",
        "metrics_file": "out/e.outputs/metrics.json",
    }
    template = [
        "--model-path",
        "{model_path}",
        "--data-path",
        "{data_path}",
        "--output-file",
        "{metrics_file}",
        "{output_dir}",
    ]
    assert fill(template, EVALUATE_PLACEHOLDERS, values) == [
        "--model-path",
        "m.model",
        "--data-path",
        "test.csv",
        "--output-file",
        "out/e.outputs/metrics.json",
        "out/e.outputs",
    ]


@pytest.mark.parametrize(
    ("template", "kind", "message"),
    [
        (
            ["--lr={hp.momentum}"],
            "train",
            '`args` entry "--lr={hp.momentum}" uses `{hp.momentum}`, but there is no '
            "hyperparameter `momentum` (the hyperparameters are: batch_size, lr)",
        ),
        (
            ["{bogus}"],
            "train",
            '`args` entry "{bogus}" has the unknown placeholder `{bogus}`; this script\'s '
            "placeholders are `{data}`, `{model_output_path}`, `{hyperparams}`, `{epoch}`, "
            "`{init_model_path}`, `{hp.NAME}` (write `{{` and `}}` for literal braces)",
        ),
        # Evaluation scripts get no hyperparameters.
        (
            ["{hp.lr}"],
            "evaluate",
            '`args` entry "{hp.lr}" has the unknown placeholder `{hp.lr}`',
        ),
        (
            ["{data}"],
            "evaluate",
            '`args` entry "{data}" has the unknown placeholder `{data}`',
        ),
        (
            ["{epoch}"],
            "train",
            '`args` entry "{epoch}" uses `{epoch}`, which only a model trained in epochs',
        ),
        (
            ["ok", "--x={data"],
            "train",
            '`args` entry "--x={data" has a `{` with no closing `}`',
        ),
    ],
)
def test_errors_name_the_placeholder(
    template: list[str], kind: str, message: str
) -> None:
    known, values, hyperparams = (
        (TRAIN_PLACEHOLDERS, TRAIN_VALUES, HYPERPARAMS)
        if kind == "train"
        else (EVALUATE_PLACEHOLDERS, {"model_path": "m"}, None)
    )
    with pytest.raises(TemplateError) as raised:
        fill(template, known, values, hyperparams)
    assert message in str(raised.value)


def test_an_argument_over_the_kernel_limit_is_an_error() -> None:
    big = {"lr": "x" * templates.MAX_ARGUMENT_BYTES}
    with pytest.raises(TemplateError, match="over Linux's limit of 131,072 bytes"):
        fill(["--lr={hp.lr}"], TRAIN_PLACEHOLDERS, TRAIN_VALUES, big)


def test_load_templates() -> None:
    assert templates.load_templates('["--a", "{data}"]') == ["--a", "{data}"]
    for bad in ('{"a": 1}', "[1]", "not json", '"--a"'):
        with pytest.raises(
            TemplateError, match="--args must be a JSON list of strings"
        ):
            templates.load_templates(bad)
