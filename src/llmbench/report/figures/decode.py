"""Decode against its floor: each cell's median ms per token over the time its step must take
to read the weights and the KV cache once at the device's measured copy bandwidth
(``decode_floor_ms``, ``measure.roofline``), by batch, for each decode mode and attention.

One marker per cell (no aggregation); ``check_failed`` cells (the graph's logits did not match
eager decode) are ringed in red. Cells measured before the floor existed have no
``decode_floor_ms`` and are not drawn; with none left the figure refuses.

May import ``llmbench.grid.spec`` (the decode modes), ``llmbench.measure.failures`` (which
statuses were measured), ``llmbench.report.figures`` (``style``, ``marks``, ``panels``),
pandas, numpy and matplotlib.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from llmbench.grid.spec import DECODE_MODES
from llmbench.measure.failures import MEASURED
from llmbench.report.figures.marks import (
    CONFIGURATION,
    NotDrawn,
    check_one_cell_per_mark,
    describe,
    varying,
)
from llmbench.report.figures.panels import panel_slots
from llmbench.report.figures.style import REFERENCE

MODE_COLORS = {"eager": "#4c72b0", "static": "#dd8452", "graph": "#55a868"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
SERVING_LEVEL = 1.6
"""× floor that dedicated serving engines reach at batch 1 (issue 15's bar), drawn for scale."""


def _measured(cells: pd.DataFrame) -> pd.DataFrame:
    if "decode_over_floor" not in cells:
        raise NotDrawn(
            "not drawn: the table has no decode floor (decode_over_floor; tables of cells "
            "measured before the floor existed)"
        )
    frame = cells[cells["status"].isin(MEASURED) & cells["decode_over_floor"].notna()].copy()
    if frame.empty:
        raise NotDrawn(
            "not drawn: no measured CUDA cell has a decode floor (it needs the device's "
            "measured copy bandwidth, recorded by CUDA cells of this version on)"
        )
    if "decode_mode" not in frame:
        frame["decode_mode"] = "eager"
    return frame


def decode_vs_floor(cells: pd.DataFrame) -> plt.Figure:
    """ms per token ÷ floor against batch: a column per prompt length, a row per quantization
    (and model, dtype, … where they vary), or only the panels with a measured cell, wrapped,
    where that matrix is mostly empty (``panels``); colour = decode mode, marker = attention."""
    frame = _measured(cells)
    # attn names a forced SDPA backend already (it is the marker): not a row of its own
    encoded = ("decode_mode", "sdpa_backend")
    rows = ["quant", *[c for c in varying(frame, CONFIGURATION) if c not in encoded]]
    check_one_cell_per_mark(frame, [*rows, "seq", "batch", "decode_mode", "attn"])
    frame["row"] = [describe(row, rows) for _, row in frame.iterrows()]
    row_labels = sorted(frame["row"].unique())
    lengths = sorted(frame["seq"].unique())
    attns = sorted(frame["attn"].unique())
    drawn = set(zip(frame["row"], frame["seq"], strict=True))
    slots = panel_slots(row_labels, lengths, drawn)
    rows_n = 1 + max(i for i, _ in slots.values())
    cols_n = 1 + max(j for _, j in slots.values())
    figure, axes = plt.subplots(
        rows_n,
        cols_n,
        figsize=(4.2 * cols_n + 2.5, 3.8 * rows_n),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for (i, j), axis in np.ndenumerate(axes):
        axis.set_visible((i, j) in slots.values())
    wrapped = len(slots) < len(row_labels) * len(lengths)
    for (label, seq), (i, j) in slots.items():
        axis = axes[i][j]
        panel = frame[(frame["row"] == label) & (frame["seq"] == seq)]
        for mode in [m for m in DECODE_MODES if m in set(panel["decode_mode"])]:
            for k, attn in enumerate(attns):
                line = panel[(panel["decode_mode"] == mode) & (panel["attn"] == attn)]
                line = line.sort_values("batch")
                if line.empty:
                    continue
                axis.plot(
                    line["batch"],
                    line["decode_over_floor"],
                    marker=MARKERS[k % len(MARKERS)],
                    color=MODE_COLORS.get(mode, "black"),
                    label=f"{mode} · {attn}",
                )
                failed = line[line["status"] == "check_failed"]
                axis.scatter(
                    failed["batch"],
                    failed["decode_over_floor"],
                    s=160,
                    facecolors="none",
                    edgecolors="red",
                )
        axis.axhline(1.0, color="black", linewidth=1, gid=REFERENCE)
        axis.axhline(SERVING_LEVEL, color="grey", linestyle="--", linewidth=1, gid=REFERENCE)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        # the row's label wrapped: a one-line title ran into its neighbours' on wide grids
        axis.set_title("\n".join([*textwrap.wrap(label, 46), f"prompt {seq}"]), fontsize=9)
        axis.set_xlabel("batch")
        if j == 0 or wrapped:
            axis.set_ylabel("ms per token ÷ floor")
    handles, labels = [], []
    for axis in axes.flat:
        for handle, text in zip(*axis.get_legend_handles_labels(), strict=True):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    figure.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)
    figure.suptitle(
        "Decode ms per token over its floor (weights + KV cache read once at the measured copy "
        f"bandwidth; 1 = floor, dashed = {SERVING_LEVEL}×; red ring = truth check failed)",
        fontsize=9,
        y=1 + 0.25 / figure.get_figheight(),  # a quarter inch above the panels' titles
    )
    figure.tight_layout()
    return figure
