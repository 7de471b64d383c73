"""Which cells a figure's marks stand for: the columns that tell cells apart, and the check that
a figure's encoding (x, facets, hue, style, explicit filters) leaves at most one cell per
plotted point. No figure aggregates silently: where two cells would share a point it refuses
(``NotDrawn``) and ``draw`` draws the reason in its place.

May import pandas and the grid's optional axes (``llmbench.grid.spec``); no other module of
``llmbench.report.figures`` (they import this one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import pandas as pd

from llmbench.grid.spec import OPTIONAL_AXES

IDENTITY = (
    "model",
    "quant",
    "attn",
    "sdpa_backend",
    "dtype",
    "batch",
    "seq",
    *OPTIONAL_AXES,
    "device",
    "device_name",
    "n_devices",
)
"""Columns of cells.csv that tell cells apart: the grid cell (``aggregate.CELL_KEYS`` and the
forced SDPA backend) and where it ran (CPU or CUDA, which GPU, on how many). The environment
columns (driver, package versions, git commit) say how a cell was measured, not which cell it
is; a table holding one cell twice is refused as such."""
CONFIGURATION = (
    "model",
    "dtype",
    "sdpa_backend",
    *OPTIONAL_AXES,
    "device",
    "device_name",
    "n_devices",
)
"""Identity columns a figure puts on its row facet (or in its row label) where they vary."""
SEARCH_IDENTITY = (
    "model",
    "quant",
    "attn",
    "dtype",
    "kv_cache",
    "allocator",
    "search",
    "batch",
    "seq",
    "device",
    "memory_budget_gib",
)
"""Columns of frontier.csv that tell searches apart (``kv_cache``, ``allocator`` only where
present)."""
COINCIDE = 0.01
"""Two series within this relative difference at every cell they share coincide on a plot."""


class NotDrawn(ValueError):
    """A figure that refuses to draw; the message says why and is drawn in the figure's place."""


def varying(table: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The columns (of those given, in that order) that take more than one value; an empty
    cell counts as a value of its own."""
    return [c for c in columns if c in table and table[c].nunique(dropna=False) > 1]


def _values(series: pd.Series, limit: int = 4) -> str:
    values = sorted({"(empty)" if pd.isna(v) else str(v) for v in series})
    return ", ".join(values[:limit]) + (", …" if len(values) > limit else "")


def check_one_cell_per_mark(
    table: pd.DataFrame, encoded: Sequence[str], identity: Sequence[str] = IDENTITY
) -> None:
    """Raise ``NotDrawn`` unless every combination of the ``encoded`` columns (x, facets, hue,
    style, and the columns a filter fixed) holds at most one row of ``table``.

    The message names the identity columns that vary among rows sharing a point and that the
    figure does not encode, or says that the table holds the same cell more than once.
    """
    encoded = [c for c in encoded if c in table]
    if table.empty:
        return
    crowded = table[table.duplicated(subset=encoded, keep=False)] if encoded else table
    if len(crowded) <= 1:
        return
    groups = crowded.groupby(encoded, dropna=False) if encoded else None
    loose = [
        column
        for column in identity
        if column in crowded
        and column not in encoded
        and (
            groups[column].nunique(dropna=False).gt(1).any()
            if groups is not None
            else crowded[column].nunique(dropna=False) > 1
        )
    ]
    if loose:
        reasons = "; ".join(f"{c} varies ({_values(crowded[c])})" for c in loose)
        verb = "is" if len(loose) == 1 else "are"
        raise NotDrawn(
            f"not drawn: {reasons} and {verb} on no facet, hue, style or filter, so a mark "
            f"would stand for several cells ({len(crowded)} cells share points)"
        )
    raise NotDrawn(
        f"not drawn: {len(crowded)} rows are the same cell ({', '.join(encoded)} equal): "
        "a table should hold each cell once (one run per table)"
    )


AXIS_NAMES = {
    "sdpa_backend": "SDPA backend",
    "decode_mode": "decode mode",
    "allocator": "allocator",
    "bnb_compute": "4-bit compute",
    "int8_threshold": "int8 threshold",
    "kv_cache": "KV cache",
    "device_map": "device map",
    "max_memory": "max memory",
}
"""A facet label's name, in words, of each column that would not say what it is on its own
(a bare 'graph' or 'expandable_segments' names no axis)."""


def _facet_value(column: str, value: Any) -> str:
    """One column's part of a facet label ('SDPA backend: auto', 'decode mode: graph')."""
    if pd.isna(value):
        if column == "memory_budget_gib":
            return "whole device"
        if column == "sdpa_backend":
            return "SDPA backend: auto"  # no backend forced: PyTorch picks one per call
        if column in OPTIONAL_AXES:  # an axis a grid block omits is at its default
            value = OPTIONAL_AXES[column][0]
        else:
            return f"{column}: (empty)"
    if column == "n_devices":
        count = int(value)
        return f"{count} GPU{'s' * (count != 1)}" if count else "no GPU"
    if column == "memory_budget_gib":
        return f"budget {float(value):g} GiB"
    if column in AXIS_NAMES:
        return f"{AXIS_NAMES[column]}: {value}"
    return str(value)


def describe(row: Mapping[str, Any], columns: Iterable[str]) -> str:
    """A facet's label from its values of ``columns``: 'mistral-7b · float32 · 2 GPUs ·
    SDPA backend: auto · decode mode: graph'."""
    return " · ".join(_facet_value(column, row[column]) for column in columns)


def one_length_message(cells: pd.DataFrame) -> str:
    """Why a figure (or a panel) over the sequence length is not drawn: one length only."""
    lengths = ", ".join(str(int(s)) for s in sorted(cells["seq"].dropna().unique()))
    plural = "s" if "," in lengths else ""
    seeds = "seed_case" in cells and cells["seed_case"].notna().any()
    where = "the seed comparison" if seeds else "the status map"
    return f"one sequence length{' per configuration' * bool(plural)} ({lengths}): see {where}"


def coinciding(cells: pd.DataFrame, keys: list[str], column: str, series: list[str]) -> list[str]:
    """'sdpa = flash_attention_2 within 0.00% at all 27 cells both ran' for each pair of
    attentions (``series``, in drawing order) whose cells agree in ``column`` wherever both
    ran at the same ``keys``: their marks would sit on one another."""
    notes = []
    for first, second in combinations(series, 2):
        pairs = cells[cells["attn"] == first].merge(
            cells[cells["attn"] == second], on=keys, suffixes=("_1", "_2")
        )
        if pairs.empty:
            continue
        difference = (pairs[f"{column}_1"] / pairs[f"{column}_2"] - 1).abs().max()
        if difference <= COINCIDE:
            notes.append(
                f"{first} = {second} within {difference:.2%} at all {len(pairs)} cells both ran: "
                "drawn side by side (dodged along x)"
            )
    return notes
