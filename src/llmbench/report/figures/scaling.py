"""How a configuration scales with the sequence length: prefill peak memory (with the GPU's
capacity) and prefill latency, every marker one cell, every cell that did not run its own mark.

Panels: a column per quantization, a row per configuration (model, dtype, device, GPU, number
of GPUs, SDPA backend: whichever vary); colour = attention, marker and line style = batch.
Attentions are dodged along x so that equal values stay visible. A configuration with one
sequence length has nothing to draw along x: it gets no panel, a line under the figure says so
(and a table with one length throughout is refused).

May import ``llmbench.measure.failures`` (statuses, phases), ``llmbench.report.figures.style``,
``.marks``, ``.panels`` and ``.unrun``, ``llmbench.grid`` (``QUANTS``), pandas, numpy and
matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from llmbench.grid.spec import QUANTS
from llmbench.measure.failures import MEASURED
from llmbench.report.figures.marks import (
    CONFIGURATION,
    NotDrawn,
    check_one_cell_per_mark,
    coinciding,
    describe,
    one_length_message,
    varying,
)
from llmbench.report.figures.panels import panel_slots
from llmbench.report.figures.style import (
    ATTN_COLORS,
    BATCH_LINESTYLES,
    BATCH_MARKERS,
    REFERENCE,
    failed_count,
    has_cuda_memory,
)
from llmbench.report.figures.unrun import (
    band_fraction,
    band_rows,
    did_not_run_handles,
    draw_unrun,
)

DODGE_LOG2 = 0.07
"""Offset between attentions along the sequence-length axis, in octaves (log2 units)."""


@dataclass(frozen=True)
class Measure:
    """What a figure plots on y."""

    title: str
    column: str
    label: str
    log: bool = False
    capacity: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """Encodings shared by every panel: dodge per attention, marker/line per batch."""

    attns: list[str]
    batches: list[int]
    lengths: list[int]

    def dodge(self, attn: str) -> float:
        index = self.attns.index(attn) if attn in self.attns else 0
        return 2 ** ((index - (len(self.attns) - 1) / 2) * DODGE_LOG2)

    def width(self, attn: str) -> float:
        """Earlier attentions draw wider lines, later ones narrower on top: a line that
        coincides with another shows as a core inside its border."""
        index = self.attns.index(attn) if attn in self.attns else 0
        return 1.0 + 0.7 * (len(self.attns) - 1 - index)

    def marker(self, batch: Any) -> str:
        return BATCH_MARKERS[self.batches.index(batch) % len(BATCH_MARKERS)]

    def linestyle(self, batch: Any) -> str:
        return BATCH_LINESTYLES[self.batches.index(batch) % len(BATCH_LINESTYLES)]


def memory_vs_seq(cells: pd.DataFrame) -> plt.Figure:
    """Prefill peak memory vs sequence length: CUDA allocator (GPU runs) or host RSS (CPU)."""
    notes = []
    cuda = has_cuda_memory(cells)
    if cuda and "device" in cells and (cells["device"] == "cpu").any():
        cpu = int((cells["device"] == "cpu").sum())
        notes.append(f"filter: device = cuda ({cpu} CPU cells not drawn: host RSS, not GPU memory)")
        cells = cells[cells["device"] != "cpu"]
    measure = Measure(
        title="Memory at the prefill peak vs sequence length",
        column="prefill_peak_allocated_gib" if cuda else "prefill_host_peak_rss_gib",
        label="peak allocated, prefill (GiB)" if cuda else "host peak RSS, prefill (GiB)",
        capacity=cuda,
        notes=notes,
    )
    return _figure(cells, measure)


def latency_vs_seq(cells: pd.DataFrame) -> plt.Figure:
    """Prefill latency (median of the repeats) vs sequence length, log scale."""
    measure = Measure(
        title="Prefill latency vs sequence length",
        column="prefill_ms_p50",
        label="prefill latency, median (ms)",
        log=True,
    )
    return _figure(cells, measure)


def _quant_order(quants: set[str]) -> list[str]:
    return [q for q in QUANTS if q in quants] + sorted(quants - set(QUANTS))


def _figure(cells: pd.DataFrame, measure: Measure) -> plt.Figure:
    """The panels of one measure; raises ``NotDrawn`` where nothing can be drawn honestly."""
    measured = cells[cells["status"].isin(MEASURED) & cells[measure.column].notna()]
    if measured.empty:
        raise NotDrawn("not drawn: no measured cell")
    rows = varying(cells, CONFIGURATION)
    check_one_cell_per_mark(measured, [*rows, "quant", "attn", "batch", "seq"])
    cells = cells.assign(_row=[describe(row, rows) for _, row in cells.iterrows()])
    measured = cells.loc[measured.index]
    counts = measured.groupby(["_row", "quant"])["seq"].nunique()
    drawn = set(counts[counts >= 2].index)
    if not drawn:
        raise NotDrawn(
            f"not drawn: {one_length_message(cells)}\n"
            "(over one length a line chart has nothing to show along its x axis)"
        )
    row_keys = sorted({row for row, _ in drawn})
    quants = [q for q in _quant_order(set(cells["quant"])) if q in {q for _, q in drawn}]
    attns = [a for a in ATTN_COLORS if a in set(cells["attn"])]
    attns += sorted(set(cells["attn"]) - set(attns))
    shown = cells[[pair in drawn for pair in zip(cells["_row"], cells["quant"], strict=True)]]
    lengths = sorted(int(s) for s in cells["seq"].dropna().unique())
    layout = Layout(attns, sorted(cells["batch"].unique()), lengths)
    slots = panel_slots(row_keys, quants, drawn)
    rows_n = 1 + max(i for i, _ in slots.values())
    cols_n = 1 + max(j for _, j in slots.values())
    figure, axes = plt.subplots(
        rows_n,
        cols_n,
        figsize=(4.4 * cols_n, 3.9 * rows_n),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for (i, j), axis in np.ndenumerate(axes):
        axis.set_visible((i, j) in slots.values())
    band = 0
    for (key, quant), (i, j) in slots.items():
        panel = cells[(cells["_row"] == key) & (cells["quant"] == quant)]
        title = "\n".join(filter(None, [key, f"quantization: {quant}"]))
        band = max(band, _draw_panel(axes[i][j], panel, measure, layout, title))
    _format_axes(figure, axes, cells, measure, band_fraction(band))
    _legend(figure, shown, layout)
    keys = ["_row", "quant", "batch", "seq"]
    notes = [*measure.notes, *coinciding(measured, keys, measure.column, layout.attns)]
    _footer(figure, shown, measure, [*notes, *_not_drawn(cells, measure, drawn)])
    return figure


def _not_drawn(cells: pd.DataFrame, measure: Measure, drawn: set[tuple[str, str]]) -> list[str]:
    """A line per configuration and quantization without a panel: why it has none."""
    lines = []
    for (row, quant), panel in cells.groupby(["_row", "quant"]):
        if (row, quant) in drawn:
            continue
        ran = panel[panel["status"].isin(MEASURED) & panel[measure.column].notna()]
        unrun = panel[~panel["status"].isin(MEASURED)]
        lengths = ", ".join(str(int(s)) for s in sorted(ran["seq"].unique()))
        reason = f"one sequence length ({lengths})" if lengths else "no measured cell"
        if len(unrun):
            reason += f"; {failed_count(unrun['status'])}"
        lines.append(f"no panel for {' · '.join(filter(None, [row, quant]))}: {reason}")
    if lines:
        where = "the seed comparison and " * bool(cells.get("seed_case", pd.Series()).notna().any())
        lines.append(f"(nothing to draw along x there: see {where}the status map)")
    return lines


def _draw_panel(
    axis: plt.Axes, panel: pd.DataFrame, measure: Measure, layout: Layout, title: str
) -> int:
    """One panel: a line per (attention, batch), a marker per cell, a mark per cell that
    failed; returns the rows of its failure band (``unrun``)."""
    axis.set_title(title, fontsize=10)
    measured = panel[panel["status"].isin(MEASURED) & panel[measure.column].notna()]
    unrun = panel[~panel["status"].isin(MEASURED)]
    for (attn, batch), series in measured.groupby(["attn", "batch"], sort=True):
        series = series.sort_values("seq")
        axis.plot(
            series["seq"] * layout.dodge(attn),
            series[measure.column],
            color=ATTN_COLORS.get(attn, "black"),
            marker=layout.marker(batch),
            linestyle=layout.linestyle(batch),
            markersize=5,
            linewidth=layout.width(attn),
            zorder=2 + 0.1 * layout.attns.index(attn),
        )
    capacity = panel["device_total_gib"].max() if "device_total_gib" in panel else float("nan")
    if measure.capacity and pd.notna(capacity):
        axis.axhline(capacity, color="grey", linestyle=":", linewidth=1, gid=REFERENCE)
        axis.annotate(
            f"GPU capacity {capacity:.1f} GiB",
            (0.01, capacity),
            xycoords=("axes fraction", "data"),
            va="bottom",
            fontsize=7,
            gid=REFERENCE,
        )
    capacity = capacity if measure.capacity else float("nan")
    draw_unrun(axis, unrun, layout.lengths, capacity)
    return band_rows(unrun, capacity)


def _format_axes(
    figure: plt.Figure, axes: Any, cells: pd.DataFrame, measure: Measure, band: float
) -> None:
    """Log2 sequence-length axis with the lengths of the grid as ticks; labels and title; the
    top ``band`` of every panel (a fraction of its height) kept free of values for the marks
    of failed cells."""
    ticks = sorted(int(s) for s in cells["seq"].dropna().unique())
    for axis in axes.flat:
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(t) for t in ticks], rotation=45 * (len(ticks) > 5))
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if measure.log:
            axis.set_yscale("log")
            plain = matplotlib.ticker.LogFormatter(labelOnlyBase=False)
            axis.yaxis.set_major_formatter(matplotlib.ticker.LogFormatter())
            axis.yaxis.set_minor_formatter(plain)
    low, high = axes.flat[0].get_ylim()
    free = max(0.12, band)  # of the panel's height, above every value
    if measure.log:
        axes.flat[0].set_ylim(low, high * (high / low) ** (free / (1 - free)))
    else:
        axes.flat[0].set_ylim(low, high + free / (1 - free) * (high - low))
    for (i, j), axis in np.ndenumerate(axes):
        below = axes[i + 1][j] if i + 1 < len(axes) else None
        if axis.get_visible() and (below is None or not below.get_visible()):
            axis.tick_params(labelbottom=True)
            axis.set_xlabel("sequence length (tokens)")
        if axis.get_visible() and not any(a.get_visible() for a in axes[i][:j]):
            axis.tick_params(labelleft=True)
            axis.set_ylabel(measure.label)
    figure.suptitle(f"{measure.title}: every marker is one cell", y=1.0)
    figure.tight_layout()


def _legend(figure: plt.Figure, shown: pd.DataFrame, layout: Layout) -> None:
    """Colour per attention, marker and line per batch, a mark per kind of failed cell: only
    those drawn in a panel (``shown``: the cells of the drawn panels)."""
    measured = shown[shown["status"].isin(MEASURED)]
    handles = [
        Line2D([], [], color=ATTN_COLORS.get(a, "black"), linewidth=2, label=a)
        for a in layout.attns
        if a in set(shown["attn"])
    ]
    handles += [
        Line2D(
            [],
            [],
            color="grey",
            marker=layout.marker(b),
            linestyle=layout.linestyle(b),
            label=f"batch {b}",
        )
        for b in layout.batches
        if b in set(measured["batch"])
    ]
    handles += did_not_run_handles(set(shown["status"]))
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def _footer(figure: plt.Figure, cells: pd.DataFrame, measure: Measure, notes: list[str]) -> None:
    """What the marks are, under the panels."""
    statuses = set(cells["status"])
    lines = [
        "One marker = one measured cell; no mean, no band. Attentions are drawn "
        f"{DODGE_LOG2:g} octave apart along x, later ones in narrower lines on top, so that "
        "equal values stay visible."
    ]
    if "oom" in statuses:
        where = (
            " on the GPU's capacity line, side by side where several share a length"
            if measure.capacity
            else " in the band at the top of the panel, one row each"
        )
        lines.append(
            f"Hollow red stars{where}: cells that ran out of memory, one per cell "
            "(label: batch, colour: attention)."
        )
    if statuses - {"oom", *MEASURED}:
        lines.append(
            "Hollow crosses in the band at the top of the panel, above every value: cells that "
            "failed or were refused, one row each (label: batch, colour: attention; reasons in "
            "the status map)."
        )
    figure.text(0.5, -0.01, "\n".join([*lines, *notes]), ha="center", va="top", fontsize=8)
