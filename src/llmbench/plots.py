"""Seaborn figures drawn from the cells table alone (no cell JSON, no GPU needed).

GPU runs plot the CUDA allocator's numbers; CPU runs (which have none) plot host RSS, and the
axis label says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

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
MEASURED = ("ok", "check_failed")
"""Statuses whose numbers were measured (check_failed: measured, but not what was asked)."""


def _has_cuda_memory(cells: pd.DataFrame) -> bool:
    column = cells.get("prefill_peak_allocated_gib")
    return column is not None and column.notna().any()


def _save(figure: plt.Figure, png: str, svg: str) -> None:
    for path in (png, svg):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=150, bbox_inches="tight")
    figure.savefig(svg, bbox_inches="tight")
    plt.close(figure)


def _empty(message: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(6, 2))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return figure


def seed_comparison(cells: pd.DataFrame) -> plt.Figure:
    """Bars per seed case: memory after load and at the prefill peak, as intended/as written."""
    cases = cells[cells["seed_case"].notna()].copy() if "seed_case" in cells else cells.iloc[0:0]
    if cases.empty:
        return _empty("This grid defines no seed cases (seed_cases in the grid file).")
    cuda = _has_cuda_memory(cases)
    if cuda:
        measures = {
            "allocated after load": "load_allocated_gib",
            "reserved after load": "load_reserved_gib",
            "peak allocated, prefill": "prefill_peak_allocated_gib",
            "peak reserved, prefill": "prefill_peak_reserved_gib",
        }
        ylabel = "GPU memory (GiB, summed over devices)"
    else:
        measures = {
            "host RSS after load": "load_host_rss_gib",
            "host peak RSS, prefill": "prefill_host_peak_rss_gib",
        }
        ylabel = "host memory, CPU run (GiB)"
    long = cases.melt(
        id_vars=["seed_case", "seed_variant", "status", "quant_applied", "attn", "dtype"],
        value_vars=list(measures.values()),
        var_name="measure",
        value_name="gib",
    )
    long["measure"] = long["measure"].map({v: k for k, v in measures.items()})
    variants = [v for v in ("as intended", "as written") if v in set(long["seed_variant"])]
    grid = sns.catplot(
        data=long,
        kind="bar",
        x="seed_case",
        y="gib",
        hue="measure",
        col="seed_variant",
        col_order=variants,
        order=sorted(cases["seed_case"].unique()),
        height=4.2,
        aspect=1.3,
        palette="viridis",
    )
    grid.set_axis_labels("seed notebook case", ylabel)
    grid.set_titles("{col_name}")
    for axis, variant in zip(grid.axes.flat, variants, strict=False):
        rows = cases[cases["seed_variant"] == variant].set_index("seed_case")
        for position, case in enumerate(sorted(cases["seed_case"].unique())):
            if case not in rows.index:
                continue
            row = rows.loc[case]
            note = f"{row['status']}\n{row['attn']}, {row['dtype']}"
            if row.get("quant_applied") is not None and not pd.isna(row.get("quant_applied")):
                note += f"\nweights: {row['quant_applied']}"
            axis.annotate(
                note,
                (position, 0),
                xytext=(0, -34),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=7,
                color=STATUS_COLORS.get(row["status"], "black"),
            )
        axis.tick_params(axis="x", labelsize=8, pad=44)
    grid.figure.suptitle(
        "Seed notebook comparison: memory per case (batch and sequence as in the grid)", y=1.03
    )
    return grid.figure


def memory_vs_seq(cells: pd.DataFrame) -> plt.Figure:
    """Prefill peak memory vs sequence length, one panel per quantization, hue attention."""
    measured = cells[cells["status"].isin(MEASURED)]
    if measured.empty:
        return _empty("No measured cell to plot.")
    cuda = _has_cuda_memory(measured)
    y = "prefill_peak_allocated_gib" if cuda else "prefill_host_peak_rss_gib"
    ylabel = "peak allocated, prefill (GiB)" if cuda else "host peak RSS, prefill, CPU run (GiB)"
    grid = sns.relplot(
        data=measured,
        kind="line",
        x="seq",
        y=y,
        hue="attn",
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
        for axis in grid.axes.flat:
            axis.axhline(capacity, color="grey", linestyle=":", linewidth=1)
            axis.text(axis.get_xlim()[0], capacity, " GPU capacity", va="bottom", fontsize=7)
    grid.figure.suptitle("Memory at the prefill peak vs sequence length", y=1.03)
    return grid.figure


def latency_vs_seq(cells: pd.DataFrame) -> plt.Figure:
    """Prefill latency (median) vs sequence length, one panel per quantization."""
    measured = cells[cells["status"].isin(MEASURED) & cells["prefill_ms_p50"].notna()]
    if measured.empty:
        return _empty("No measured cell to plot.")
    grid = sns.relplot(
        data=measured,
        kind="line",
        x="seq",
        y="prefill_ms_p50",
        hue="attn",
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


def status_map(cells: pd.DataFrame) -> plt.Figure:
    """Every cell's status: where runs went out of memory, were unsupported, or failed."""
    if cells.empty:
        return _empty("No cell.")
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


FIGURES = {
    "seed": seed_comparison,
    "memory": memory_vs_seq,
    "latency": latency_vs_seq,
    "status": status_map,
}


def draw_all(cells_csv: str | Path, outputs: Mapping[str, Any]) -> None:
    """Draw every figure; ``outputs`` maps ``{key}_png``/``{key}_svg`` to paths."""
    cells = pd.read_csv(cells_csv)
    sns.set_theme(style="whitegrid", context="notebook")
    for key, draw in FIGURES.items():
        _save(draw(cells), outputs[f"{key}_png"], outputs[f"{key}_svg"])
