"""Where a figure's panels go: a row per configuration and a column per value of the
column variable (quantization, prompt length), or, where that matrix would be mostly empty,
the panels that have something to draw in reading order, :data:`WRAP_COLUMNS` a row.

Imports nothing from llmbench.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

WRAP_BELOW = 0.6
"""A matrix filled below this fraction (a quantization grid: each knob goes with some
quantizations only) is drawn wrapped instead of mostly blank."""

WRAP_COLUMNS = 4
"""Panels a row when wrapped."""


def panel_slots(
    rows: Sequence[Any], columns: Sequence[Any], drawn: Collection[tuple[Any, Any]]
) -> dict[tuple[Any, Any], tuple[int, int]]:
    """(row, column) in the figure's grid of each drawn (row, column) pair, in the order of
    ``rows`` then ``columns``; raises ValueError when nothing is drawn."""
    order = [(r, c) for r in rows for c in columns if (r, c) in drawn]
    if not order:
        raise ValueError("no panel to draw")
    if len(order) >= WRAP_BELOW * len(rows) * len(columns):
        return {(r, c): (rows.index(r), columns.index(c)) for r, c in order}
    width = min(WRAP_COLUMNS, len(order))
    return {pair: divmod(index, width) for index, pair in enumerate(order)}
