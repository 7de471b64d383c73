"""What every figure shares: colours per status and per attention, the measured
statuses, the empty-figure placeholder and byte-stable saving.

May import ``llmbench.grid`` (``ATTNS``), pandas, seaborn and matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.grid.spec import ATTNS

STATUS_COLORS = {
    "ok": "#4c9f70",
    "check_failed": "#e3b23c",
    "oom": "#c8553d",
    "unsupported": "#8d8d8d",
    "unavailable": "#b8b8b8",
    "error": "#7b2d26",
    "timeout": "#5d4e8c",
    "crashed": "#1f1f1f",
}
ATTN_COLORS = dict(zip(ATTNS, sns.color_palette("tab10", len(ATTNS)), strict=True))
"""One colour per attention implementation, the same in every figure."""
MEASURED = ("ok", "check_failed")
"""Statuses whose numbers were measured (check_failed: measured, but not what was asked)."""


def has_cuda_memory(cells: pd.DataFrame) -> bool:
    """Whether the table holds CUDA allocator numbers (a GPU run) rather than host RSS only."""
    column = cells.get("prefill_peak_allocated_gib")
    return column is not None and column.notna().any()


def save(figure: plt.Figure, png: str, svg: str) -> None:
    """Write the figure as PNG and SVG; the same table gives byte-identical files (no date in
    the SVG, element ids from a fixed salt), so redrawn reference figures show no diff."""
    for path in (png, svg):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=150, bbox_inches="tight")
    with matplotlib.rc_context({"svg.hashsalt": "llmbench"}):
        figure.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)


def empty(message: str) -> plt.Figure:
    """A small figure that only says why there is nothing to draw."""
    figure, axis = plt.subplots(figsize=(6, 2))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return figure
