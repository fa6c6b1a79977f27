"""Tests for databazel/private/display.py: numbers and text as people read them."""

from __future__ import annotations

import pytest
from display import (
    TIE_MARK,
    any_marked,
    format_column,
    format_delta,
    format_number,
    markdown_cell,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.9722222222222222, "0.9722"),
        (0.11714529847914541, "0.1171"),
        (0.5, "0.5"),
        (1.0, "1"),
        (12345.678, "1.235e+04"),
        (0.000123456, "0.0001235"),
        (-2.5e-7, "-2.5e-07"),
        (12345, "12345"),  # an int in full
        (0, "0"),
    ],
)
def test_four_significant_digits(value: float, text: str) -> None:
    assert format_number(value) == text


def test_values_that_differ_beyond_four_digits_are_widened_and_marked() -> None:
    column = [0.97222, 0.9, 0.97218, 0.97222, None]
    assert format_column(column) == [
        "0.97222" + TIE_MARK,
        "0.9",
        "0.97218" + TIE_MARK,
        "0.97222" + TIE_MARK,  # equal to the first: printed alike
        "",
    ]
    assert any_marked(format_column(column))


def test_equal_values_are_not_marked() -> None:
    cells = format_column([0.9666666666666667, 0.9666666666666667, 0.95])
    assert cells == ["0.9667", "0.9667", "0.95"]
    assert not any_marked(cells)


def test_only_the_digits_that_tell_values_apart_are_added() -> None:
    # Alike at 7 digits, apart at 8: 8 are shown, not 17.
    assert format_column([0.123456781, 0.123456789]) == [
        "0.12345678" + TIE_MARK,
        "0.12345679" + TIE_MARK,
    ]
    # Doubles one unit in the last place apart: every digit.
    a = 0.1
    b = 0.1 + 2**-56
    assert a != b
    widened = format_column([a, b])
    assert widened[0] != widened[1] and all(w.endswith(TIE_MARK) for w in widened)
    assert float(widened[0][:-1]) == a and float(widened[1][:-1]) == b


def test_an_int_and_a_float_that_print_alike() -> None:
    assert format_column([3, 3.00001]) == ["3" + TIE_MARK, "3.00001" + TIE_MARK]
    assert format_column([3, 3.0]) == ["3", "3"]  # equal


def test_unmarked_widening_for_a_value_and_its_bar() -> None:
    assert format_column([0.95996, 0.96], mark=False) == ["0.95996", "0.96"]


@pytest.mark.parametrize(
    ("delta", "text"),
    [(0.0027777, "+0.002778"), (-0.017141, "-0.01714"), (0, "0"), (3, "+3")],
)
def test_deltas_are_signed(delta: float, text: str) -> None:
    assert format_delta(delta) == text


def test_markdown_cells_show_html_as_text() -> None:
    assert (
        markdown_cell("</script><script>alert(1)</script> a|b\nc & d")
        == "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; a\\|b c &amp; d"
    )
