"""The seed notebook comparison: memory per seed case, as intended and as written, next to the
notebook's own readings. Each bar is one reading of one cell; a phase that did not run has no
bar, its status and reason stand in its place.

May import ``llmbench.measure.failures`` (statuses, phases), ``llmbench.report.figures.style``,
``llmbench.report.figures.marks``, pandas, seaborn and matplotlib.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.measure.failures import phase_ran
from llmbench.report.figures.marks import NotDrawn, check_one_cell_per_mark
from llmbench.report.figures.style import (
    DID_NOT_RUN,
    STATUS_COLORS,
    has_cuda_memory,
)

Marker = tuple[str, str, str, str]
"""(column, marker, colour, legend label) of a reading drawn as a marker over the bars."""

NOTEBOOK_MARKERS: tuple[Marker, ...] = (
    ("notebook_initial_reserved_gib", "o", "black", "notebook: reserved after load (cuda:0)"),
    ("notebook_inference_reserved_gib", "X", "black", "notebook: reserved after forward (cuda:0)"),
)
"""The notebook's own readings (memory_reserved on cuda:0), where the grid file gives them."""
CUDA0_MARKERS: tuple[Marker, ...] = (
    ("load_reserved_cuda0_gib", "o", "crimson", "here: reserved after load, cuda:0 only"),
    ("prefill_reserved_cuda0_gib", "X", "crimson", "here: reserved after prefill, cuda:0 only"),
)
"""Spread over several GPUs: what the notebook's reading would show here."""


def _case_label(case: str, row: Mapping[str, Any] | None) -> str:
    """Tick label of a seed case: its name, status, attention/dtype and the weights loaded."""
    if row is None or not isinstance(row.get("status"), str):
        return f"{case}\n[not run]"
    label = f"{case}\n[{row['status']}]\n{row['attn']}, {row['dtype']}"
    if isinstance(row.get("quant_applied"), str):
        label += f"\nweights: {row['quant_applied']}"
    return label


def _measures(cuda: bool) -> tuple[dict[str, str], str]:
    """(legend label -> column of each bar, y-axis label): CUDA allocator or host RSS."""
    if cuda:
        measures = {
            "allocated after load": "load_allocated_gib",
            "reserved after load": "load_reserved_gib",
            "peak allocated, prefill": "prefill_peak_allocated_gib",
            "peak reserved, prefill": "prefill_peak_reserved_gib",
        }
        return measures, "GPU memory (GiB, summed over devices)"
    measures = {
        "host RSS after load": "load_host_rss_gib",
        "host peak RSS, prefill": "prefill_host_peak_rss_gib",
    }
    return measures, "host memory, CPU run (GiB)"


def _markers(cases: pd.DataFrame, cuda: bool) -> list[Marker]:
    """The notebook's readings, plus this run's cuda:0 readings where a model spans GPUs."""
    markers = list(NOTEBOOK_MARKERS)
    if cuda and (cases.get("n_devices", pd.Series(dtype=float)) > 1).any():
        markers += CUDA0_MARKERS
    return markers


def ran(row: Mapping[str, Any] | None, column: str) -> bool:
    """Whether the phase a column reads (its prefix: load, prefill, decode) ran to its end in
    this cell: all of them in a measured cell, those before the failing one otherwise."""
    if row is None or not isinstance(row.get("status"), str):
        return False
    return phase_ran(column.split("_", 1)[0], row["status"], row.get("phase"))


def _reason(row: Mapping[str, Any]) -> str:
    """'unsupported in prefill:' and the reason, wrapped to stand in a bar's place."""
    error = row.get("error")
    reason = error.split(": ", 1)[-1] if isinstance(error, str) else ""
    phase = row.get("phase") if isinstance(row.get("phase"), str) else "?"
    return f"{row['status']} in {phase}:\n" + textwrap.fill(reason, 34)


def _draw_bars(
    axis: plt.Axes,
    by_case: Mapping[str, Mapping[str, Any]],
    order: Sequence[str],
    measures: Mapping[str, str],
    palette: Sequence[Any],
) -> None:
    """A bar per reading whose phase ran; the status and reason where a phase did not."""
    width = 0.8 / len(measures)
    missing: dict[int, list[float]] = {}
    for index, (name, column) in enumerate(measures.items()):
        slots = [i - 0.4 + width * (index + 0.5) for i in range(len(order))]
        drawn = [
            (slot, by_case[case][column])
            for slot, case in zip(slots, order, strict=True)
            if ran(by_case.get(case), column) and pd.notna(by_case[case][column])
        ]
        for i, case in enumerate(order):
            row = by_case.get(case)
            if row is not None and isinstance(row.get("status"), str) and not ran(row, column):
                missing.setdefault(i, []).append(slots[i])
        xs, heights = zip(*drawn, strict=True) if drawn else ((), ())
        axis.bar(xs, heights, width, label=name, color=palette[index])
    for i, slots in missing.items():
        row = by_case[order[i]]
        axis.text(
            sum(slots) / len(slots),
            0.02,
            _reason(row),
            transform=axis.get_xaxis_transform(),
            rotation=90,
            ha="center",
            va="bottom",
            fontsize=7,
            color="0.15",
            bbox={
                "boxstyle": "round",
                "facecolor": "white",
                "edgecolor": STATUS_COLORS.get(row["status"], "black"),
            },
            gid=DID_NOT_RUN,
        )
    axis.set_xlim(-0.5, len(order) - 0.5)


def _draw_panel(
    axis: plt.Axes,
    rows: pd.DataFrame,
    order: Sequence[str],
    measures: Mapping[str, str],
    palette: Sequence[Any],
    markers: Sequence[Marker],
) -> None:
    """One variant's panel: a group of bars per case, the readings as markers over them."""
    by_case = rows.to_dict(orient="index")
    _draw_bars(axis, by_case, order, measures, palette)
    for column, marker, color, name in markers:
        notebook = column.startswith("notebook_")
        points = [
            (i, by_case[case][column])
            for i, case in enumerate(order)
            if column in rows
            and (notebook or ran(by_case.get(case), column))
            and pd.notna(by_case[case][column])
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.scatter(xs, ys, marker=marker, color=color, s=40, zorder=5, label=name)
    axis.set_xticks(range(len(order)))
    axis.set_xticklabels([_case_label(c, by_case.get(c)) for c in order], fontsize=8)


def _legend(figure: plt.Figure, axes: Any) -> None:
    """One legend for the figure: every panel's entries, each label once."""
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for axis in axes.flat[1:]:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(
        handles,
        labels,
        loc="upper center",
        ncol=3,
        bbox_to_anchor=(0.5, 1.0),
        fontsize=8,
        frameon=False,
    )


def seed_comparison(cells: pd.DataFrame) -> plt.Figure:
    """Bars per seed case: memory after load and at the prefill peak, as intended/as written.

    Where the grid file gives the notebook's own readings (memory_reserved on cuda:0), they
    are drawn as black markers next to the measured bars.
    """
    cases = cells[cells["seed_case"].notna()].copy() if "seed_case" in cells else cells.iloc[0:0]
    if cases.empty:
        raise NotDrawn("This grid defines no seed cases (seed_cases in the grid file).")
    check_one_cell_per_mark(cases, ["seed_variant", "seed_case"])
    cuda = has_cuda_memory(cases)
    measures, ylabel = _measures(cuda)
    variants = [v for v in ("as intended", "as written") if v in set(cases["seed_variant"])]
    order = sorted(cases["seed_case"].unique())
    figure, axes = plt.subplots(
        1, len(variants), figsize=(6.5 * len(variants), 5.2), sharey=True, squeeze=False
    )
    palette = sns.color_palette("viridis", len(measures))
    markers = _markers(cases, cuda)
    for axis, variant in zip(axes.flat, variants, strict=True):
        rows = cases[cases["seed_variant"] == variant].set_index("seed_case").reindex(order)
        _draw_panel(axis, rows, order, measures, palette, markers)
        axis.set_title(variant)
        axis.set_ylabel(ylabel)
    _legend(figure, axes)
    figure.suptitle("Seed notebook comparison: memory per case", y=1.06)
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    return figure
