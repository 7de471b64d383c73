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
from matplotlib.transforms import blended_transform_factory

from llmbench.report.figures.marks import (
    SEARCH_IDENTITY,
    NotDrawn,
    check_one_cell_per_mark,
    describe,
    varying,
)
from llmbench.report.figures.style import ATTN_COLORS, DID_NOT_RUN, REFERENCE, VALUE

FRONTIER_MARKERS = {
    "found": ("o", "largest sequence length that runs"),
    "above_max": ("^", "runs up to the largest length searched (lower bound)"),
    "below_min": ("v", "fails already at the smallest length searched (at the axis bottom)"),
    "batch": ("s", "largest batch at a fixed length (batch search)"),
    "batch_below_min": ("s", "batch search fails already at the smallest batch (axis bottom)"),
    "stopped": ("X", "search stopped: unsupported/unavailable/error/... (panel note)"),
}
"""Marker per search outcome in the frontier figure."""


FRONTIER_DODGE_LOG2 = 0.06
"""Horizontal offset between attentions in the frontier figure, in log2 units of batch."""
SHARED_LABEL_COLOR = "0.3"
"""Colour of a frontier label that several attentions share."""
RAN = ("found", "above_max")
"""Search outcomes with a frontier: the search ran and found where memory runs out."""
BOTTOM = 0.05
"""Height (axes fraction) of the marks of searches that fail at their smallest value: at the
axis bottom, below every frontier, so that none reads as a length that runs."""

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
    for point in seq[seq["status"] == "below_min"].itertuples():
        text = f"fails at smallest length (b{int(point.batch)} @ s{int(point.min)})"
        _at_bottom(axis, point.batch * dodge, "below_min", color, text)


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
        labels.add(point, text, xy, color, xytext=(0, -7), ha="center", va="top")
    low = group[(group["search"] == "batch") & (group["status"] == "below_min")]
    for point in low.itertuples():
        text = f"fails at smallest batch (b{int(point.min)} @ s{int(point.seq)})"
        _at_bottom(axis, point.min * dodge, "batch_below_min", color, text)


def _at_bottom(axis: plt.Axes, x: float, outcome: str, color: Any, text: str) -> None:
    """The hollow mark of a search that fails at its smallest value, at the axis bottom (its
    height is no value), with a text that says so beside it, towards the panel's middle."""
    place = blended_transform_factory(axis.transData, axis.transAxes)
    axis.scatter(
        [x],
        [BOTTOM],
        transform=place,
        marker=FRONTIER_MARKERS[outcome][0],
        facecolors="none",
        edgecolors=color,
        s=45,
        zorder=4,
        gid=DID_NOT_RUN,
    )
    axis.annotate(
        text,
        (x, BOTTOM),
        xycoords=place,
        xytext=(7, 0),  # _keep_inside turns it to the left in the right half of the panel
        textcoords="offset points",
        ha="left",
        va="center",
        fontsize=7,
        color=color,
        gid=DID_NOT_RUN,
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


def _wrap_parts(label: str, width: int = 46) -> list[str]:
    """A facet label on lines of at most ``width`` characters, broken between its ' · ' parts
    only (never inside 'allocator: default')."""
    lines: list[str] = []
    for part in label.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += f" · {part}"
        else:
            lines.append(part)
    return lines


def _outcomes(frame: pd.DataFrame) -> set[str]:
    """The keys of :data:`FRONTIER_MARKERS` that the figure draws."""
    outcomes = set()
    for search, status in zip(frame["search"], frame["status"], strict=True):
        if search == "seq" and status in ("found", "above_max", "below_min"):
            outcomes.add(status)
        elif search == "batch" and status in RAN:
            outcomes.add("batch")
        elif search == "batch" and status == "below_min":
            outcomes.add("batch_below_min")
    return outcomes


def _keep_inside(axes: Any, frame: pd.DataFrame) -> None:
    """Once the limits are final: room at the bottom of every panel for the marks of searches
    that fail at their smallest value (under a dashed line, below every frontier and every
    length tick), their texts turned towards the panel's middle."""
    if {"below_min", "batch_below_min"} & _outcomes(frame):
        low, high = axes.flat[0].get_ylim()
        low /= (high / low) ** 0.15
        axes.flat[0].set_ylim(low, high)
        # no length tick at the band's height: its marks' height is no value
        band = low * (high / low) ** (2 * BOTTOM)
        ticks = [2**k for k in range(int(high).bit_length() + 1) if band < 2**k <= high]
        axes.flat[0].set_yticks(ticks)
        for axis in axes.flat:
            axis.axhline(band, color="0.6", linewidth=0.8, linestyle="--", gid=REFERENCE)
    for axis in axes.flat:
        left, right = axis.get_xlim()
        for text in axis.texts:
            if text.get_gid() == DID_NOT_RUN and text.xy[0] > (left * right) ** 0.5:
                text.set_position((-7, 0))
                text.set_horizontalalignment("right")


def _legend(figure: plt.Figure, frame: pd.DataFrame) -> None:
    """Colour per attention, then marker per search outcome that the figure draws (stopped
    searches: panel notes)."""
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
        if key in _outcomes(frame)
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
            if panel.empty:  # this quantization was searched in another configuration only
                axis.text(0.5, 0.5, "no search", transform=axis.transAxes, ha="center", color="0.4")
            # on two lines: one ran into its neighbour's with a long allocator name
            head = _wrap_parts(configuration) if len(rows) > 1 else []
            title = "\n".join([*head, f"quantization: {quant}"])
            _format_panel(axis, title, notes)
            if column_index == 0:
                axis.set_ylabel("largest sequence length that runs")
            if row_index == len(rows) - 1:
                axis.set_xlabel("batch size")
    _set_batch_ticks(axes, frame)
    _keep_inside(axes, frame)
    _legend(figure, frame)
    _suptitle(figure, frame)
    figure.tight_layout()
    return figure
