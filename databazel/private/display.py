"""How databazel prints numbers and text for people: 4 significant digits, ties marked.

The leaderboard, the Markdown and HTML reports, `bazel run //pkg:search --
--against OTHER.json` and the gate messages print metrics with
SIGNIFICANT_DIGITS significant digits (``0.9722``, ``0.1171``, ``1.235e+04``;
integers in full). When different values of one column would print alike, each
of them is printed with the fewest more digits that tell them apart, followed
by TIE_MARK (``0.97222*`` and ``0.97218*``): a tie that is not one is never
hidden. Equal values print alike, unmarked. The JSON and CSV reports keep
every digit (``repr``). Text from BUILD files and scripts that goes into
Markdown is escaped (`markdown_cell`). Stdlib only.
"""

from __future__ import annotations

from collections.abc import Sequence

SIGNIFICANT_DIGITS = 4
# Marks a value printed with more digits because another one of its column
# printed alike at SIGNIFICANT_DIGITS.
TIE_MARK = "*"
# Digits that tell any two different doubles apart.
_MAX_DIGITS = 17

TIE_NOTE = (
    f"A value marked {TIE_MARK} differs from another value of its column only "
    f"beyond {SIGNIFICANT_DIGITS} significant digits, so both show the digits that "
    "tell them apart"
)


def format_number(value: float | int, digits: int = SIGNIFICANT_DIGITS) -> str:
    """`value` with `digits` significant digits; an int in full."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}g}"


def format_delta(value: float | int) -> str:
    """A change, signed: ``+0.002778``, ``-3``, ``0``."""
    if value == 0:
        return "0"
    text = format_number(value)
    return text if text.startswith("-") else "+" + text


def format_column(values: Sequence[float | int | None], mark: bool = True) -> list[str]:
    """Each value as `format_number` prints it, ties that are not ties widened.

    Args:
      values: a column of numbers; None prints as "".
      mark: whether to append TIE_MARK to the widened values.

    Returns:
      One string per value.
    """
    shown = ["" if v is None else format_number(v) for v in values]
    alike: dict[str, set[float | int]] = {}
    for value, text in zip(values, shown):
        if value is not None:
            alike.setdefault(text, set()).add(value)
    widened: dict[float | int, str] = {}
    for group in alike.values():
        if len(group) < 2:
            continue
        for digits in range(SIGNIFICANT_DIGITS + 1, _MAX_DIGITS + 1):
            texts = {v: format_number(v, digits) for v in group}
            if len(set(texts.values())) == len(group):
                break
        suffix = TIE_MARK if mark else ""
        widened.update({v: text + suffix for v, text in texts.items()})
    return [
        text if value is None else widened.get(value, text)
        for value, text in zip(values, shown)
    ]


def any_marked(cells: Sequence[str]) -> bool:
    """Whether `format_column` widened and marked one of `cells`."""
    return any(cell.endswith(TIE_MARK) for cell in cells)


def markdown_cell(text: str) -> str:
    """Text for one line of Markdown: a table cell, a heading or a sentence.

    Line breaks become spaces and `|` is escaped; `<`, `>` and `&` are written
    as entities, so that a renderer that passes HTML through shows a value
    such as `<script>` as text.
    """
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.splitlines()).replace("|", "\\|")
