"""The marks of cells that did not run (out of memory, unsupported, failed): one hollow mark
per cell, never a data marker, side by side where several share a place, with their legend
entries. They never sit where a measured value could: out-of-memory cells on the GPU's
capacity line, the others just above the panel.

May import ``llmbench.measure.failures`` (statuses, phases), ``llmbench.report.figures.style``,
pandas and matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory, offset_copy

from llmbench.measure.failures import MEASURED
from llmbench.report.figures.style import (
    ATTN_COLORS,
    DID_NOT_RUN,
    FAILED_LABEL,
    FAILED_MARK,
    OOM_LABEL,
    OOM_MARK,
)

STACK_POINTS = 24
"""Horizontal step between marks of cells that did not run at the same place (points): side
by side, so that every mark stays on its line (a mark stacked below the capacity line would
read as a value no cell measured)."""


def did_not_run_handles(statuses: set[str]) -> list[Line2D]:
    """Legend entries for the marks of cells that did not run, for the statuses present."""
    handles = []
    for mark, label, present in (
        (OOM_MARK, OOM_LABEL, "oom" in statuses),
        (FAILED_MARK, FAILED_LABEL, bool(statuses - {"oom", *MEASURED})),
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


def draw_unrun(
    axis: plt.Axes, unrun: pd.DataFrame, dodge: Callable[[str], float], capacity: float
) -> None:
    """A mark per cell that did not run, at its sequence length: out-of-memory cells on the
    capacity line (where there is one), the others just above the panel's top edge, outside
    the values; marks at one place sit side by side to the right, each labelled with its batch
    in its attention's colour."""
    top = blended_transform_factory(axis.transData, axis.transAxes)
    taken: dict[tuple[float, bool], int] = {}
    for row in unrun.sort_values(["attn", "seq", "batch"]).itertuples():
        on_capacity = row.status == "oom" and pd.notna(capacity)
        base, y = (axis.transData, float(capacity)) if on_capacity else (top, 1.04)
        x = float(row.seq) * dodge(row.attn)
        depth = taken[x, on_capacity] = taken.get((x, on_capacity), -1) + 1
        place = offset_copy(base, fig=axis.figure, x=STACK_POINTS * depth, units="points")
        mark = OOM_MARK if row.status == "oom" else FAILED_MARK
        axis.scatter([x], [y], transform=place, zorder=6, clip_on=False, gid=DID_NOT_RUN, **mark)
        axis.annotate(
            f"b{row.batch}",
            (x, y),
            xycoords=place,
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=6,
            color=ATTN_COLORS.get(row.attn, "black"),
            gid=DID_NOT_RUN,
        )
