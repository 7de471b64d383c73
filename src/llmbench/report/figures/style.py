"""What every figure shares: colours per status and per attention, the markers of cells and of
cells that failed, the tags that tell a cell's mark from a reference line, the notice
drawn in place of a figure, the CPU-run banner and byte-stable saving.

May import ``llmbench.grid`` (``ATTNS``), pandas, seaborn and matplotlib; no other module of
``llmbench.report.figures``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.text import Annotation

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

REFERENCE = "reference"
"""gid of an artist that is no cell: a capacity line, y = x, a tolerance band."""
DID_NOT_RUN = "did-not-run"
"""gid of the mark (or text) that stands for a cell that failed, or a phase that did not run."""
VALUE = "value"
"""gid of a text that quotes a number of one cell (the frontier's labels)."""

BATCH_MARKERS = ("o", "s", "^", "D", "v", "P", "h", "<", ">", "p")
"""Data markers, one per batch size; no 'x', 'X' or '*': those belong to cells that failed."""
BATCH_LINESTYLES = ("-", "--", ":", "-.")
OOM_MARK: dict[str, Any] = {
    "marker": "*",
    "s": 130,
    "facecolors": "none",
    "edgecolors": STATUS_COLORS["oom"],
    "linewidths": 1.4,
}
"""A cell that ran out of memory: a hollow red star, no data marker looks like it."""
FAILED_MARK: dict[str, Any] = {
    "marker": "X",
    "s": 70,
    "facecolors": "none",
    "edgecolors": STATUS_COLORS["error"],
    "linewidths": 1.2,
}
"""A cell that failed otherwise (unsupported, unavailable, error, timeout, crashed)."""
OOM_LABEL = "out of memory"
"""Legend entry of the out-of-memory mark: the cell loaded and ran until memory ran out."""


def failed_label(statuses: list[str]) -> str:
    """Legend entry of the mark of cells that failed otherwise, naming their statuses: they
    loaded and ran until they failed, or were refused (unsupported), not 'did not run'."""
    return f"failed: {', '.join(statuses) or 'other'} (reasons in the status map)"


def failed_count(statuses: pd.Series) -> str:
    """'24 failed (unsupported 24)': how many cells failed (or were refused), by status."""
    counts = statuses.value_counts()
    by_status = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
    return f"{len(statuses)} failed ({by_status})"


CPU_NOTE = (
    "CPU smoke run: tests the pipeline, not GPUs; tiny models' host RSS says nothing "
    "about GPU memory (nor their latency about GPU speed)"
)


def has_cuda_memory(cells: pd.DataFrame) -> bool:
    """Whether the table holds CUDA allocator numbers (a GPU run) rather than host RSS only."""
    column = cells.get("prefill_peak_allocated_gib")
    return column is not None and column.notna().any()


def is_cpu_run(cells: pd.DataFrame) -> bool:
    """Whether any cell (or search) ran on the CPU: a smoke run with host RSS, no CUDA numbers."""
    device = cells.get("device")
    return device is not None and bool((device == "cpu").any())


def add_cpu_note(figure: plt.Figure) -> None:
    """The CPU-run banner, boxed, just over the figure's title (a blank title if it has none)."""
    anchor = figure._suptitle or figure.suptitle(" ", y=1.0)
    figure.add_artist(
        Annotation(
            CPU_NOTE,
            xy=(0.5, 1.0),
            xycoords=anchor,
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
            color=STATUS_COLORS["error"],
            bbox={"boxstyle": "round", "facecolor": "#fff3cd", "edgecolor": "#e3b23c"},
        )
    )


def save(figure: plt.Figure, png: str, svg: str) -> None:
    """Write the figure as PNG and SVG; the same table gives byte-identical files (no date in
    the SVG, element ids from a fixed salt), so redrawn reference figures show no diff."""
    for path in (png, svg):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=150, bbox_inches="tight")
    with matplotlib.rc_context({"svg.hashsalt": "llmbench"}):
        figure.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)


def empty(message: str, title: str = "") -> plt.Figure:
    """A figure that only says why there is nothing to draw (under the figure's title)."""
    figure, axis = plt.subplots(figsize=(9, 2.4))
    axis.axis("off")
    wrapped = "\n".join(textwrap.fill(line, 90) for line in message.splitlines())
    axis.text(0.5, 0.5, wrapped, ha="center", va="center", fontsize=11)
    if title:
        figure.suptitle(title, y=1.0)
    return figure
