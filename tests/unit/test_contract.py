"""Tests for databazel/private/contract.py: the metrics an evaluation script writes."""

import re

import pytest

import contract


MALFORMED = [
    ("{not json", "not valid JSON: Expecting property name"),
    ("", "not valid JSON: Expecting value"),
    ("[0.9, 0.1]", "expected a JSON object, found a list"),
    ('"0.9"', 'expected a JSON object, found a string "0.9"'),
    ("0.9", "expected a JSON object, found a number (0.9)"),
    ("{}", "the object is empty; at least one metric is required"),
    ('{"accuracy": "0.9"}', 'metric "accuracy" has a string "0.9" value'),
    ('{"accuracy": {"value": 0.9}}', 'metric "accuracy" has a nested object value'),
    ('{"accuracy": [0.9]}', 'metric "accuracy" has a list value'),
    ('{"accuracy": true}', 'metric "accuracy" has a boolean (true) value'),
    ('{"accuracy": null}', 'metric "accuracy" has null value'),
    ('{"accuracy": NaN}', 'metric "accuracy" is NaN; it must be a finite number'),
    ('{"accuracy": Infinity}', 'metric "accuracy" is Infinity'),
    ('{"loss": -Infinity}', 'metric "loss" is -Infinity'),
    ('{"loss": 1e999}', 'metric "loss" is Infinity'),
    ('{"accuracy": 0.9, "accuracy": 0.8}', 'duplicate key "accuracy"'),
    ('{"": 0.9}', "a metric has an empty name"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_parse_metrics_rejects(text: str, message: str) -> None:
    with pytest.raises(contract.ContractError) as excinfo:
        contract.parse_metrics(text)
    assert message in str(excinfo.value)


def test_parse_metrics_accepts_ints_and_floats() -> None:
    metrics = contract.parse_metrics('{"b": 2, "a": -0.5, "c": 1e3}')
    assert metrics == {"a": -0.5, "b": 2, "c": 1000.0}
    assert isinstance(metrics["b"], int)
    assert (
        contract.format_metrics(metrics)
        == '{\n  "a": -0.5,\n  "b": 2,\n  "c": 1000.0\n}\n'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"n": ' + "9" * 5000 + "}", "Exceeds the limit (4300 digits)"),
        ('{"n": 1' + "0" * 400 + "}", "an integer of 401 digits, too large"),
        ('{"n": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
    ],
    ids=["5000 digits", "401 digits", "deep"],
)
def test_hostile_metrics_are_contract_errors(text: str, message: str) -> None:
    with pytest.raises(contract.ContractError, match=re.escape(message)):
        contract.parse_metrics(text)
