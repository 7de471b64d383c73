"""The same cells on two GPUs: one panel per metric, the first GPU's value on x, the second's
on y, one marker per cell pair, y = x drawn as a reference line.

Input is the table of :func:`llmbench.report.compare.compare` (one row per cell, both GPUs'
numbers). A marker is drawn only where the cell ran (``ok``) on both GPUs; cells whose status
differs are listed under the figure, never plotted. Colour is attention, marker shape is
quantization; batch and length are not encoded, which is safe because every marker is one
cell pair, not an aggregate.

May import ``llmbench.report.figures.style``, pandas, seaborn and matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from llmbench.report.figures.marks import NotDrawn
from llmbench.report.figures.style import ATTN_COLORS, REFERENCE

PANELS = (
    ("prefill_peak_allocated_gib", "peak allocated, prefill (GiB)", "linear"),
    ("prefill_ms_p50", "prefill p50 (ms)", "log"),
    ("decode_ms_per_token_p50", "decode p50 (ms per token)", "log"),
    ("mbu", "decode MBU (of each GPU's datasheet bandwidth)", "linear"),
)
"""(metric, axis label, scale) of each panel."""
QUANT_MARKERS = {
    "none": "o",
    "int8": "s",
    "nf4": "^",
    "nf4-dq": "D",
    "nf4-not-passed": "v",
    "fp4": "<",
    "fp4-dq": ">",
    "fp8": "P",
    "fp8-dyn": "h",
}
"""Marker per quantization; no 'x' or '*' (those mean a cell did not run elsewhere)."""


def _panel(axis: plt.Axes, both: pd.DataFrame, metric: str, names: Sequence[str]) -> None:
    a, b = names
    for (attn, quant), cells in both.groupby(["attn", "quant"], sort=True):
        axis.scatter(
            cells[f"{metric}_{a}"],
            cells[f"{metric}_{b}"],
            color=ATTN_COLORS.get(attn, "0.4"),
            marker=QUANT_MARKERS.get(quant, "P"),
            s=28,
            alpha=0.85,
            linewidths=0,
        )
    values = pd.concat([both[f"{metric}_{a}"], both[f"{metric}_{b}"]]).dropna()
    low, high = float(values.min()), float(values.max())
    (line,) = axis.plot([low, high], [low, high], color="0.5", linewidth=0.8, linestyle="--")
    line.set_gid(REFERENCE)


def _legend(figure: plt.Figure, both: pd.DataFrame) -> None:
    handles = [
        Line2D([], [], linestyle="", marker="o", color=ATTN_COLORS.get(attn, "0.4"), label=attn)
        for attn in sorted(both["attn"].unique())
    ] + [
        Line2D([], [], linestyle="", marker=QUANT_MARKERS.get(q, "P"), color="0.3", label=q)
        for q in sorted(both["quant"].unique())
    ]
    handles.append(Line2D([], [], color="0.5", linestyle="--", label="y = x (same on both)"))
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=True)


def _footnote(table: pd.DataFrame, names: Sequence[str], drawn: int) -> str:
    a, b = names
    lines = [f"Each marker is one cell measured on both GPUs ({drawn} cells ok on both)."]
    differ = table[table[f"status_{a}"] != table[f"status_{b}"]]
    for _, row in differ.iterrows():
        lines.append(
            f"not drawn: {row['quant']}/{row['attn']}/{row['dtype']} b{row['batch']} "
            f"s{row['seq']}: {a} {row[f'status_{a}']}, {b} {row[f'status_{b}']}"
        )
    return "\n".join(lines)


def crossgpu_figure(table: pd.DataFrame, names: Sequence[str]) -> plt.Figure:
    """The comparison figure; raises NotDrawn when no cell ran on both GPUs."""
    a, b = names
    both = table[(table[f"status_{a}"] == "ok") & (table[f"status_{b}"] == "ok")]
    if both.empty:
        raise NotDrawn(f"no cell ran (status ok) on both {a} and {b}")
    gpus = (str(table[f"gpu_{a}"].iloc[0]), str(table[f"gpu_{b}"].iloc[0]))
    figure, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 4.3))
    for axis, (metric, label, scale) in zip(axes, PANELS, strict=True):
        _panel(axis, both, metric, names)
        axis.set_xscale(scale)
        axis.set_yscale(scale)
        if scale == "log":  # plain numbers: 30, 100, 300 rather than 3 x 10^1
            for side in (axis.xaxis, axis.yaxis):
                side.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
                side.set_major_formatter(ScalarFormatter())
                side.set_minor_formatter(NullFormatter())
        axis.set_title(label, fontsize=10)
        axis.set_xlabel(gpus[0], fontsize=9)
        axis.set_ylabel(gpus[1], fontsize=9)
    _legend(figure, both)
    figure.suptitle(f"The same cells on two GPUs: {gpus[1]} (y) vs {gpus[0]} (x)")
    figure.text(0.5, -0.02, _footnote(table, names, len(both)), ha="center", va="top", fontsize=9)
    figure.tight_layout()
    return figure
