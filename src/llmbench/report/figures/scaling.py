"""How a configuration scales with the sequence length: prefill peak memory (with the GPU's
capacity and the cells that ran out of memory) and prefill latency.

May import ``llmbench.report.figures.style``, pandas, seaborn and matplotlib.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.report.figures.style import ATTN_COLORS, MEASURED, empty, has_cuda_memory


def _series(measured: pd.DataFrame) -> pd.DataFrame:
    """Rows that belong to a line: configurations measured at two or more sequence lengths."""
    keys = ["model", "quant", "attn", "dtype", "batch"]
    lengths = measured.groupby(keys)["seq"].transform("nunique")
    return measured[lengths >= 2] if (lengths >= 2).any() else measured


def _facets(grid: sns.FacetGrid) -> list[tuple[tuple[str | None, str], plt.Axes]]:
    """((row value or None, column value), axis) for a grid faceted by col and maybe row."""
    return [
        (key if isinstance(key, tuple) else (None, key), axis)
        for key, axis in grid.axes_dict.items()
    ]


def memory_vs_seq(cells: pd.DataFrame) -> plt.Figure:
    """Prefill peak memory vs sequence length, one panel per quantization, hue attention."""
    measured = _series(cells[cells["status"].isin(MEASURED)])
    if measured.empty:
        return empty("No measured cell to plot.")
    cuda = has_cuda_memory(measured)
    y = "prefill_peak_allocated_gib" if cuda else "prefill_host_peak_rss_gib"
    ylabel = "peak allocated, prefill (GiB)" if cuda else "host peak RSS, prefill, CPU run (GiB)"
    grid = sns.relplot(
        data=measured,
        kind="line",
        x="seq",
        y=y,
        hue="attn",
        palette=ATTN_COLORS,
        hue_order=[a for a in ATTN_COLORS if a in set(measured["attn"])],
        style="batch",
        col="quant",
        row="model" if measured["model"].nunique() > 1 else None,
        markers=True,
        dashes=True,
        height=3.6,
        aspect=1.1,
    )
    grid.set_axis_labels("sequence length (tokens)", ylabel)
    if cuda and "device_total_gib" in measured and measured["device_total_gib"].notna().any():
        capacity = float(measured["device_total_gib"].max())
        oom = cells[cells["status"] == "oom"]
        for (model, quant), axis in _facets(grid):
            axis.axhline(capacity, color="grey", linestyle=":", linewidth=1)
            axis.text(axis.get_xlim()[0], capacity, " GPU capacity", va="bottom", fontsize=7)
            failed = oom[oom["quant"] == quant]
            if model is not None:
                failed = failed[failed["model"] == model]
            for _, row in failed.iterrows():
                axis.scatter(
                    row["seq"],
                    capacity,
                    marker="x",
                    s=60,
                    linewidths=2,
                    color=ATTN_COLORS.get(row["attn"], "black"),
                    zorder=5,
                )
        grid.figure.text(
            0.5,
            -0.02,
            "x on the capacity line: out of memory (colour = attention)",
            ha="center",
            fontsize=8,
        )
    grid.figure.suptitle("Memory at the prefill peak vs sequence length", y=1.03)
    return grid.figure


def latency_vs_seq(cells: pd.DataFrame) -> plt.Figure:
    """Prefill latency (median) vs sequence length, one panel per quantization."""
    measured = _series(cells[cells["status"].isin(MEASURED) & cells["prefill_ms_p50"].notna()])
    if measured.empty:
        return empty("No measured cell to plot.")
    grid = sns.relplot(
        data=measured,
        kind="line",
        x="seq",
        y="prefill_ms_p50",
        hue="attn",
        palette=ATTN_COLORS,
        hue_order=[a for a in ATTN_COLORS if a in set(measured["attn"])],
        style="batch",
        col="quant",
        row="model" if measured["model"].nunique() > 1 else None,
        markers=True,
        height=3.6,
        aspect=1.1,
    )
    grid.set_axis_labels("sequence length (tokens)", "prefill latency, median (ms)")
    for axis in grid.axes.flat:
        axis.set_yscale("log")
    grid.figure.suptitle("Prefill latency vs sequence length", y=1.03)
    return grid.figure
