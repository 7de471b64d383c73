"""The status map: every cell's status, where runs went out of memory, were unsupported, or
failed.

May import ``llmbench.report.figures.style``, pandas, seaborn and matplotlib.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.report.figures.style import STATUS_COLORS, empty


def status_map(cells: pd.DataFrame) -> plt.Figure:
    """Every cell's status: where runs went out of memory, were unsupported, or failed."""
    if cells.empty:
        return empty("No cell.")
    frame = cells.copy()
    frame["configuration"] = (
        frame["model"] + " · " + frame["quant"] + " · " + frame["attn"] + " · " + frame["dtype"]
    )
    frame["shape"] = "b" + frame["batch"].astype(str) + " s" + frame["seq"].astype(str)
    shapes = (
        frame[["batch", "seq", "shape"]].drop_duplicates().sort_values(["batch", "seq"])["shape"]
    )
    table = frame.pivot_table(
        index="configuration", columns="shape", values="status", aggfunc="first"
    ).reindex(columns=list(shapes))
    statuses = [s for s in STATUS_COLORS if s in set(frame["status"])]
    codes = table.apply(lambda column: column.map({s: i for i, s in enumerate(statuses)}))
    figure, axis = plt.subplots(
        figsize=(1.0 + 0.75 * len(table.columns), 1.2 + 0.32 * len(table.index))
    )
    cmap = matplotlib.colors.ListedColormap([STATUS_COLORS[s] for s in statuses])
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
    axis.set_ylabel("model · quantization · attention · dtype")
    handles = [matplotlib.patches.Patch(color=STATUS_COLORS[s], label=s) for s in statuses]
    axis.legend(handles=handles, bbox_to_anchor=(1.01, 1), loc="upper left", title="status")
    axis.set_title("Status of every cell (oom = ran out of memory)")
    return figure
