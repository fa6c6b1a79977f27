"""Tests for databazel/private/records.py (records written by the runner: test_records.py)."""

import pytest

import contract
import records


def test_a_metrics_file_with_a_status_metric_is_not_a_failure() -> None:
    assert records.parse_metrics_or_failure('{"status": 1}') == ({"status": 1}, None)
    with pytest.raises(contract.ContractError, match="string"):
        records.parse_metrics_or_failure('{"status": "failed"}')
