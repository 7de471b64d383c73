"""The status map: every cell's status, where runs went out of memory, were unsupported, or
failed. One square per cell: a row per configuration (model, quantization, attention, dtype,
and device, GPU, number of GPUs or SDPA backend where they vary), a column per batch × length.

May import ``llmbench.report.figures.style``, ``llmbench.report.figures.marks``, pandas,
seaborn and matplotlib.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.report.figures.marks import (
    CONFIGURATION,
    NotDrawn,
    check_one_cell_per_mark,
    describe,
    varying,
)
from llmbench.report.figures.style import STATUS_COLORS

ROWS = ("model", "quant", "attn", "dtype")
"""Always in a row's label; the rest of ``marks.CONFIGURATION`` where it varies."""


def status_map(cells: pd.DataFrame) -> plt.Figure:
    """Every cell's status: where runs went out of memory, were unsupported, or failed."""
    if cells.empty:
        raise NotDrawn("not drawn: no cell")
    extra = [c for c in varying(cells, CONFIGURATION) if c not in ROWS]
    rows = [*ROWS, *extra]
    check_one_cell_per_mark(cells, [*rows, "batch", "seq"])
    frame = cells.copy()
    frame["configuration"] = [describe(row, rows) for _, row in frame.iterrows()]
    frame["shape"] = "b" + frame["batch"].astype(str) + " s" + frame["seq"].astype(str)
    shapes = (
        frame[["batch", "seq", "shape"]].drop_duplicates().sort_values(["batch", "seq"])["shape"]
    )
    table = frame.pivot(index="configuration", columns="shape", values="status").reindex(
        columns=list(shapes)
    )
    statuses = [s for s in STATUS_COLORS if s in set(frame["status"])]
    statuses += sorted(set(frame["status"]) - set(statuses))
    codes = table.apply(lambda column: column.map({s: i for i, s in enumerate(statuses)}))
    figure, axis = plt.subplots(
        figsize=(1.0 + 0.75 * len(table.columns), 1.2 + 0.32 * len(table.index))
    )
    cmap = matplotlib.colors.ListedColormap([STATUS_COLORS.get(s, "black") for s in statuses])
    sns.heatmap(
        codes.astype(float),
        cmap=cmap,
        vmin=-0.5,
        vmax=len(statuses) - 0.5,
        cbar=False,
        linewidths=0.5,
        linecolor="white",
        annot=table.fillna(""),
        fmt="",
        annot_kws={"fontsize": 6, "color": "white"},
        ax=axis,
    )
    axis.set_xlabel("batch × sequence length")
    axis.set_ylabel(" · ".join(["model", "quantization", "attention", "dtype", *extra]))
    handles = [
        matplotlib.patches.Patch(color=STATUS_COLORS.get(s, "black"), label=s) for s in statuses
    ]
    axis.legend(handles=handles, bbox_to_anchor=(1.01, 1), loc="upper left", title="status")
    axis.set_title("Status of every cell: one square per cell (oom = ran out of memory)")
    return figure
