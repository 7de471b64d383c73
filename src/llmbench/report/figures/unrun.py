"""The marks of cells that failed (out of memory, unsupported, error, ...): one hollow mark per
cell, never a data marker, with their legend entries. They never sit where a measured value
could, and never outside the panel (over a title or past its edge): out-of-memory cells on the
GPU's capacity line, side by side towards the middle of the panel; the others (and
out-of-memory cells where there is no capacity line) in a band at the top inside the panel,
above every value, a column per sequence length with one row per cell.

May import ``llmbench.measure.failures`` (statuses, phases), ``llmbench.report.figures.style``,
pandas and matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory, offset_copy

from llmbench.measure.failures import MEASURED
from llmbench.report.figures.style import (
    ATTN_COLORS,
    DID_NOT_RUN,
    FAILED_MARK,
    OOM_LABEL,
    OOM_MARK,
    failed_label,
)

STACK_POINTS = 24
"""Horizontal step between out-of-memory marks on the capacity line at one length (points):
side by side, so that every mark stays on the line (a mark stacked below it would read as a
value no cell measured)."""
BAND_ROW = 0.06
"""Height of one row of the failure band at the top of a panel, as a fraction of the axes."""
BAND_MARGIN = 0.02
"""Space between the band's top row and the panel's top edge, and under its bottom row."""


def did_not_run_handles(statuses: set[str]) -> list[Line2D]:
    """Legend entries for the marks of failed cells, for the statuses present."""
    others = sorted(set(statuses) - {"oom", *MEASURED})
    handles = []
    for mark, label, present in (
        (OOM_MARK, OOM_LABEL, "oom" in statuses),
        (FAILED_MARK, failed_label(others), bool(others)),
    ):
        if present:
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    marker=mark["marker"],
                    markersize=9 if mark is OOM_MARK else 7,
                    markerfacecolor="none",
                    markeredgecolor=mark["edgecolors"],
                    markeredgewidth=mark["linewidths"],
                    label=label,
                )
            )
    return handles


def band_rows(unrun: pd.DataFrame, capacity: float) -> int:
    """Rows the failure band of a panel needs: the most cells in the band at one length (out
    of memory goes on the capacity line where there is one)."""
    banded = unrun[unrun["status"] != "oom"] if pd.notna(capacity) else unrun
    return int(banded.groupby("seq").size().max()) if len(banded) else 0


def band_fraction(rows: int) -> float:
    """The fraction of a panel's height that a band of ``rows`` rows takes (0 without one)."""
    return BAND_MARGIN * 2 + BAND_ROW * rows if rows else 0.0


def draw_unrun(
    axis: plt.Axes, unrun: pd.DataFrame, lengths: Sequence[float], capacity: float
) -> None:
    """A mark per failed cell, at its sequence length (``lengths``: the x range the panels
    share): out-of-memory cells on the capacity line (where there is one), the others in the
    band at the top; each labelled with its batch in its attention's colour, marks and labels
    on the side of the panel's middle so that none leaves the panel."""
    middle = math.sqrt(min(lengths) * max(lengths)) if len(lengths) else 1.0
    top = blended_transform_factory(axis.transData, axis.transAxes)
    taken: dict[tuple[float, bool], int] = {}
    for row in unrun.sort_values(["attn", "seq", "batch"]).itertuples():
        on_capacity = row.status == "oom" and pd.notna(capacity)
        x = float(row.seq)
        side = -1 if x > middle else 1  # towards the middle, away from the nearer edge
        depth = taken[x, on_capacity] = taken.get((x, on_capacity), -1) + 1
        if on_capacity:
            base, y = axis.transData, float(capacity)
            shift = {"x": side * STACK_POINTS * depth}
        else:
            base, y = top, 1 - BAND_MARGIN - BAND_ROW * (depth + 0.5)
            shift = {}
        place = offset_copy(base, fig=axis.figure, units="points", **shift)
        mark = OOM_MARK if row.status == "oom" else FAILED_MARK
        axis.scatter([x], [y], transform=place, zorder=6, clip_on=True, gid=DID_NOT_RUN, **mark)
        axis.annotate(
            f"b{row.batch}",
            (x, y),
            xycoords=place,
            xytext=(6 * side, 0),
            textcoords="offset points",
            ha="left" if side > 0 else "right",
            va="center",
            fontsize=6,
            color=ATTN_COLORS.get(row.attn, "black"),
            gid=DID_NOT_RUN,
            annotation_clip=True,
            clip_on=True,
        )
