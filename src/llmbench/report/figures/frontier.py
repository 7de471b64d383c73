"""The out-of-memory frontier figure (results/tables/frontier.csv): the largest sequence length
that runs vs batch, and the largest batch at a fixed length, per attention.

Every marker is one search (``marks.SEARCH_IDENTITY``); a table that would put two searches on
one marker is refused. Labels quoting a frontier carry ``style.VALUE``.

May import ``llmbench.report.figures.style``, ``llmbench.report.figures.marks``, pandas and
matplotlib.
"""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from llmbench.report.figures.marks import (
    SEARCH_IDENTITY,
    NotDrawn,
    check_one_cell_per_mark,
    describe,
    varying,
)
from llmbench.report.figures.style import ATTN_COLORS, VALUE

FRONTIER_MARKERS = {
    "found": ("o", "largest sequence length that runs"),
    "above_max": ("^", "runs up to the largest length searched (lower bound)"),
    "below_min": ("v", "fails already at the smallest length searched"),
    "batch": ("s", "largest batch at a fixed length (batch search)"),
    "batch_below_min": ("s", "batch search fails already at the smallest batch"),
    "stopped": ("X", "search stopped: unsupported/unavailable/error/... (panel note)"),
}
"""Marker per search outcome in the frontier figure."""


FRONTIER_DODGE_LOG2 = 0.06
"""Horizontal offset between attentions in the frontier figure, in log2 units of batch."""
SHARED_LABEL_COLOR = "0.3"
"""Colour of a frontier label that several attentions share."""
RAN = ("found", "above_max")
"""Search outcomes with a frontier: the search ran and found where memory runs out."""

Point = tuple[str, int, int]
"""(search axis, batch, seq) of a frontier."""


def _frontier_point(row: Any) -> Point:
    """(search axis, batch, seq) of a search row that ran: where its frontier lies."""
    if row.search == "seq":
        return ("seq", int(row.batch), int(row.frontier))
    return ("batch", int(row.frontier), int(row.seq))


def _shared_frontiers(searches: pd.DataFrame) -> set[Point]:
    """Frontier points that more than one attention reached."""
    points = [_frontier_point(row) for row in searches.itertuples()]
    return {point for point in points if points.count(point) > 1}


class _Labels:
    """A panel's frontier labels: one per value, in grey when attentions share it."""

    def __init__(self, axis: plt.Axes, shared: set[Point]) -> None:
        self.axis = axis
        self.shared = shared
        self.labelled: set[Point] = set()

    def add(self, point: Any, text: str, xy: tuple[float, float], color: Any, **place: Any) -> None:
        key = _frontier_point(point)
        if key in self.labelled:
            return  # one label per value, in grey when attentions share it
        self.labelled.add(key)
        self.axis.annotate(
            text,
            xy,
            textcoords="offset points",
            **place,
            fontsize=7,
            color=SHARED_LABEL_COLOR if key in self.shared else color,
            gid=VALUE,
        )


def _draw_length_searches(
    axis: plt.Axes, seq: pd.DataFrame, color: Any, dodge: float, labels: _Labels, width: float
) -> None:
    """One attention's length searches: the frontier per batch, labelled, and the batches that
    fail already at the smallest length (hollow, at that length)."""
    line = seq[seq["status"].isin(RAN)]
    axis.plot(line["batch"] * dodge, line["frontier"], color=color, linewidth=width)
    for status in RAN:
        points = seq[seq["status"] == status]
        axis.scatter(
            points["batch"] * dodge,
            points["frontier"],
            marker=FRONTIER_MARKERS[status][0],
            color=color,
            s=45,
            zorder=4,
        )
    for point in line.itertuples():
        xy = (point.batch * dodge, point.frontier)
        labels.add(point, f"{int(point.frontier)}", xy, color, xytext=(5, 4))
    low = seq[seq["status"] == "below_min"]
    axis.scatter(
        low["batch"] * dodge,
        low["min"],
        marker=FRONTIER_MARKERS["below_min"][0],
        facecolors="none",
        edgecolors=color,
        s=45,
        zorder=4,
    )


def _draw_batch_searches(
    axis: plt.Axes, group: pd.DataFrame, color: Any, dodge: float, labels: _Labels, width: float
) -> None:
    """One attention's batch searches: the largest batch per length, dashed, labelled; a hollow
    square where the smallest batch already fails."""
    batch = group[(group["search"] == "batch") & group["status"].isin(RAN)]
    batch = batch.sort_values("seq")
    axis.plot(batch["frontier"] * dodge, batch["seq"], color=color, linestyle="--", lw=width)
    axis.scatter(
        batch["frontier"] * dodge,
        batch["seq"],
        marker=FRONTIER_MARKERS["batch"][0],
        color=color,
        s=40,
        zorder=4,
    )
    for point in batch.itertuples():
        text = f"b{int(point.frontier)} @ s{int(point.seq)}"
        xy = (point.frontier * dodge, point.seq)
        labels.add(point, text, xy, color, xytext=(-5, -11), ha="right")
    low = group[(group["search"] == "batch") & (group["status"] == "below_min")]
    axis.scatter(
        low["min"] * dodge,
        low["seq"],
        marker=FRONTIER_MARKERS["batch_below_min"][0],
        facecolors="none",
        edgecolors=color,
        s=40,
        zorder=4,
    )


def _draw_panel(axis: plt.Axes, panel: pd.DataFrame, stopped_statuses: set[str]) -> list[str]:
    """Every attention's searches of one panel; returns the notes on searches that stopped."""
    notes = []
    attns = [a for a in ATTN_COLORS if a in set(panel["attn"])]
    labels = _Labels(axis, _shared_frontiers(panel[panel["status"].isin(RAN)]))
    for attn_index, attn in enumerate(attns):
        color = ATTN_COLORS[attn]
        # Dodge: attentions with the same frontier would hide each other's lines.
        dodge = 2 ** ((attn_index - (len(attns) - 1) / 2) * FRONTIER_DODGE_LOG2)
        # Equal flat frontiers dodge sideways only at their markers: earlier attentions draw
        # wider lines, later ones narrower on top, so both show.
        width = 1.0 + 0.8 * (len(attns) - 1 - attn_index)
        group = panel[panel["attn"] == attn]
        seq = group[group["search"] == "seq"].sort_values("batch")
        _draw_length_searches(axis, seq, color, dodge, labels, width)
        _draw_batch_searches(axis, group, color, dodge, labels, width)
        stopped = group[group["status"].isin(stopped_statuses)]
        for status, count in stopped["status"].value_counts().items():
            notes.append(f"{attn}: {status} ({count} search{'es' * (count > 1)})")
    return notes


def _format_panel(axis: plt.Axes, title: str, notes: list[str]) -> None:
    """Log2 axes with plain numbers, and the panel's title over its notes."""
    axis.set_xscale("log", base=2)
    axis.set_yscale("log", base=2)
    axis.margins(x=0.1, y=0.1)
    axis.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_title("\n".join([title, *notes]), fontsize=10)


def _set_batch_ticks(axes: Any, frame: pd.DataFrame) -> None:
    """The same batch ticks on every panel: every batch searched and the powers of two up to
    the largest batch found."""
    batches = set(frame.loc[frame["search"] == "seq", "batch"].dropna().astype(int))
    found = frame.loc[(frame["search"] == "batch") & frame["status"].isin(RAN), "frontier"]
    largest = max([*batches, *found.dropna().astype(int)], default=1)
    ticks = sorted(batches | {2**k for k in range(int(largest).bit_length())})
    for axis in axes.flat:
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(b) for b in ticks])


def _legend(figure: plt.Figure, frame: pd.DataFrame) -> None:
    """Colour per attention, then marker per search outcome (stopped searches: panel notes)."""
    handles = [
        matplotlib.lines.Line2D([], [], color=ATTN_COLORS[a], lw=2, label=a)
        for a in ATTN_COLORS
        if a in set(frame["attn"])
    ] + [
        matplotlib.lines.Line2D(
            [],
            [],
            color="grey",
            marker=marker,
            linestyle="none",
            label=label,
            markerfacecolor="none" if key.endswith("below_min") else "grey",
        )
        for key, (marker, label) in FRONTIER_MARKERS.items()
        if key != "stopped"
    ]
    figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)


def _suptitle(figure: plt.Figure, frame: pd.DataFrame) -> None:
    """Device and memory budget, and how many probes the searches took vs brute force."""
    budget = frame["memory_budget_gib"].dropna().unique()
    devices = ", ".join(sorted(frame["device"].dropna().astype(str).unique()))
    if frame["memory_budget_gib"].nunique(dropna=False) > 1:
        where = ", budget per panel)"
    else:
        where = f", budget {budget[0]:g} GiB)" if len(budget) == 1 else ", whole device)"
    figure.suptitle(
        "Out-of-memory frontier"
        + (f" ({devices}" if devices else " (")
        + where
        + f": {int(frame['probes'].sum())} probes for {len(frame)} searches, "
        f"brute force at the same step {int(frame['brute_force'].sum())}",
        y=1.02,
    )


def frontier_figure(searches: pd.DataFrame) -> plt.Figure:
    """Largest sequence length that runs vs batch: one panel per quantization (rows: model and
    dtype, and device and memory budget where they vary), colour = attention. Batch searches
    (largest batch at a fixed length) are squares on the same axes: both trace the boundary
    between what runs and what runs out of memory. Attentions are dodged sideways so that
    equal frontiers stay visible; a value they share is labelled once, in grey."""
    if searches.empty:
        raise NotDrawn("not drawn: no frontier search")
    frame = searches.copy()
    columns = [
        "model",
        "dtype",
        *varying(frame, ("kv_cache", "allocator", "device", "memory_budget_gib")),
    ]
    check_one_cell_per_mark(
        frame, [*columns, "quant", "attn", "search", "batch", "seq"], identity=SEARCH_IDENTITY
    )
    frame["configuration"] = [describe(row, columns) for _, row in frame.iterrows()]
    rows = sorted(frame["configuration"].unique())
    quants = sorted(frame["quant"].unique(), key=lambda q: (q != "none", q))
    figure, axes = plt.subplots(
        len(rows),
        len(quants),
        figsize=(4.6 * len(quants), 3.9 * len(rows)),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    stopped_statuses = set(frame["status"]) - {"found", "above_max", "below_min"}
    for row_index, configuration in enumerate(rows):
        for column_index, quant in enumerate(quants):
            axis = axes[row_index][column_index]
            panel = frame[(frame["configuration"] == configuration) & (frame["quant"] == quant)]
            notes = _draw_panel(axis, panel, stopped_statuses)
            title = f"{configuration} · {quant}" if len(rows) > 1 else f"quantization: {quant}"
            _format_panel(axis, title, notes)
            if column_index == 0:
                axis.set_ylabel("largest sequence length that runs")
            if row_index == len(rows) - 1:
                axis.set_xlabel("batch size")
    _set_batch_ticks(axes, frame)
    _legend(figure, frame)
    _suptitle(figure, frame)
    figure.tight_layout()
    return figure
