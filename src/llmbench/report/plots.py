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

from llmbench.grid.spec import ATTNS  # noqa: E402

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


def _has_cuda_memory(cells: pd.DataFrame) -> bool:
    column = cells.get("prefill_peak_allocated_gib")
    return column is not None and column.notna().any()


def _save(figure: plt.Figure, png: str, svg: str) -> None:
    """Write the figure as PNG and SVG; the same table gives byte-identical files (no date in
    the SVG, element ids from a fixed salt), so redrawn reference figures show no diff."""
    for path in (png, svg):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=150, bbox_inches="tight")
    with matplotlib.rc_context({"svg.hashsalt": "llmbench"}):
        figure.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)


def _empty(message: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(6, 2))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return figure


def _case_label(case: str, row: Mapping[str, Any] | None) -> str:
    """Tick label of a seed case: its name, status, attention/dtype and the weights loaded."""
    if row is None or not isinstance(row.get("status"), str):
        return f"{case}\n[not run]"
    label = f"{case}\n[{row['status']}]\n{row['attn']}, {row['dtype']}"
    if isinstance(row.get("quant_applied"), str):
        label += f"\nweights: {row['quant_applied']}"
    return label


def seed_comparison(cells: pd.DataFrame) -> plt.Figure:
    """Bars per seed case: memory after load and at the prefill peak, as intended/as written.

    Where the grid file gives the notebook's own readings (memory_reserved on cuda:0), they
    are drawn as black markers next to the measured bars.
    """
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
    variants = [v for v in ("as intended", "as written") if v in set(cases["seed_variant"])]
    order = sorted(cases["seed_case"].unique())
    figure, axes = plt.subplots(
        1, len(variants), figsize=(6.5 * len(variants), 5.2), sharey=True, squeeze=False
    )
    palette = sns.color_palette("viridis", len(measures))
    width = 0.8 / len(measures)
    for axis, variant in zip(axes.flat, variants, strict=True):
        rows = cases[cases["seed_variant"] == variant].set_index("seed_case").reindex(order)
        for index, (name, column) in enumerate(measures.items()):
            offsets = [i - 0.4 + width * (index + 0.5) for i in range(len(order))]
            axis.bar(offsets, rows[column].fillna(0), width, label=name, color=palette[index])
        markers = [
            (
                "notebook_initial_reserved_gib",
                "o",
                "black",
                "notebook: reserved after load (cuda:0)",
            ),
            (
                "notebook_inference_reserved_gib",
                "X",
                "black",
                "notebook: reserved after forward (cuda:0)",
            ),
        ]
        if cuda and (cases.get("n_devices", pd.Series(dtype=float)) > 1).any():
            # Spread over several GPUs: what the notebook's reading would show here.
            markers += [
                (
                    "load_reserved_cuda0_gib",
                    "o",
                    "crimson",
                    "here: reserved after load, cuda:0 only",
                ),
                (
                    "prefill_reserved_cuda0_gib",
                    "X",
                    "crimson",
                    "here: reserved after prefill, cuda:0 only",
                ),
            ]
        for column, marker, color, name in markers:
            if column in rows and rows[column].notna().any():
                axis.scatter(
                    range(len(order)),
                    rows[column],
                    marker=marker,
                    color=color,
                    s=40,
                    zorder=5,
                    label=name,
                )
        axis.set_xticks(range(len(order)))
        by_case = rows.to_dict(orient="index")
        axis.set_xticklabels([_case_label(c, by_case.get(c)) for c in order], fontsize=8)
        axis.set_title(variant)
        axis.set_ylabel(ylabel)
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
    figure.suptitle("Seed notebook comparison: memory per case", y=1.06)
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    return figure


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
        return _empty("No measured cell to plot.")
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


def predicted_vs_measured(cells: pd.DataFrame) -> plt.Figure:
    """Measured vs predicted prefill peak allocated (GiB) of every measured cell.

    Left: measured against the analytic model (predict.py), y = x and a +-10 % band. Right:
    measured / predicted, where differences too small for the left panel show. Colour =
    attention, marker = quantization.
    """
    columns = ("predicted_prefill_peak_allocated_gib", "prefill_peak_allocated_gib")
    ratio = "prefill_measured_over_predicted"
    if any(column not in cells for column in (*columns, ratio)):
        return _empty("No prediction in this table (rebuild it with `llmbench tables`).")
    # The ratio is left empty where the comparison does not hold: a phase that failed, or a
    # model spread over several GPUs (the analytic model predicts one device).
    data = cells[cells["status"].isin(MEASURED)].dropna(subset=[*columns, ratio]).copy()
    if data.empty:
        return _empty(
            "No measured one-GPU CUDA cell with a prediction to compare\n"
            "(the analytic model predicts one device)."
        )
    data["ratio"] = data[ratio]
    hue_order = [a for a in ATTN_COLORS if a in set(data["attn"])]
    quants = [
        q for q in ("none", "int8", "nf4", "nf4-dq", "nf4-not-passed") if q in set(data["quant"])
    ]
    # Implementations that measure the same (sdpa and flash_attention_2 often do) would hide
    # each other: earlier ones get bigger markers, drawn first, later ones sit inside them.
    sizes = {attn: 50 + 45 * (len(hue_order) - 1 - i) for i, attn in enumerate(hue_order)}
    data = data.assign(_size=data["attn"].map(sizes)).sort_values("_size", ascending=False)
    style = {"hue": "attn", "palette": ATTN_COLORS, "hue_order": hue_order}
    style.update(size="attn", sizes=sizes, size_order=hue_order)
    style.update(style="quant", style_order=quants, alpha=0.9, edgecolor="black")
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    top = 1.08 * float(data[list(columns)].max().max())
    line = [0.0, top]
    left.fill_between(line, [0.0, 0.9 * top], [0.0, 1.1 * top], color="grey", alpha=0.15)
    left.plot(line, line, color="grey", linewidth=1)
    sns.scatterplot(data=data, x=columns[0], y=columns[1], ax=left, legend=False, **style)
    left.set_xlim(0, top)
    left.set_ylim(0, top)
    left.set_xlabel("predicted prefill peak allocated (GiB)")
    left.set_ylabel("measured prefill peak allocated (GiB)")
    left.set_title("measured vs predicted (grey: y = x ± 10 %)")
    right.axhspan(0.9, 1.1, color="grey", alpha=0.12, label="±10 %")
    right.axhspan(0.95, 1.05, color="grey", alpha=0.18, label="±5 %")
    right.axhline(1.0, color="grey", linewidth=1)
    sns.scatterplot(data=data, x=columns[0], y="ratio", ax=right, **style)
    spread = max(0.12, 1.2 * float((data["ratio"] - 1).abs().max()))
    right.set_ylim(1 - spread, 1 + spread)
    right.set_xlabel("predicted prefill peak allocated (GiB)")
    right.set_ylabel("measured / predicted")
    errors = (data["ratio"] - 1).abs()
    right.set_title(
        f"{len(data)} cells: max |error| {errors.max():.2%}, median {errors.median():.2%}"
    )
    right.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    figure.suptitle("Analytic memory model vs measurement: prefill peak allocated", y=1.0)
    figure.tight_layout()
    return figure


FIGURES = {
    "seed": seed_comparison,
    "memory": memory_vs_seq,
    "latency": latency_vs_seq,
    "status": status_map,
    "predicted": predicted_vs_measured,
}


def draw_all(cells_csv: str | Path, outputs: Mapping[str, Any]) -> None:
    """Draw every figure; ``outputs`` maps ``{key}_png``/``{key}_svg`` to paths."""
    cells = pd.read_csv(cells_csv)
    sns.set_theme(style="whitegrid", context="notebook")
    for key, draw in FIGURES.items():
        _save(draw(cells), outputs[f"{key}_png"], outputs[f"{key}_svg"])


# ---- out-of-memory frontier (results/tables/frontier.csv) --------------------------------------

FRONTIER_MARKERS = {
    "found": ("o", "largest sequence length that runs"),
    "above_max": ("^", "runs up to the largest length searched (lower bound)"),
    "below_min": ("v", "fails already at the smallest length searched"),
    "batch": ("s", "largest batch at a fixed length (batch search)"),
    "stopped": ("X", "search stopped: unsupported/unavailable/error/... (panel note)"),
}
"""Marker per search outcome in the frontier figure."""


FRONTIER_DODGE_LOG2 = 0.06
"""Horizontal offset between attentions in the frontier figure, in log2 units of batch."""
SHARED_LABEL_COLOR = "0.3"
"""Colour of a frontier label that several attentions share."""


def _frontier_point(row: Any) -> tuple[str, int, int]:
    """(search axis, batch, seq) of a search row that ran: where its frontier lies."""
    if row.search == "seq":
        return ("seq", int(row.batch), int(row.frontier))
    return ("batch", int(row.frontier), int(row.seq))


def _shared_frontiers(searches: pd.DataFrame) -> set[tuple[str, int, int]]:
    """Frontier points that more than one attention reached."""
    points = [_frontier_point(row) for row in searches.itertuples()]
    return {point for point in points if points.count(point) > 1}


def frontier_figure(searches: pd.DataFrame) -> plt.Figure:
    """Largest sequence length that runs vs batch: one panel per quantization (rows: model and
    dtype when there are several), colour = attention. Batch searches (largest batch at a
    fixed length) are squares on the same axes: both trace the boundary between what runs and
    what runs out of memory. Attentions are dodged sideways so that equal frontiers stay
    visible; a value they share is labelled once, in grey."""
    if searches.empty:
        return _empty("No frontier search.")
    frame = searches.copy()
    frame["configuration"] = frame["model"] + " · " + frame["dtype"]
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
    ran = ("found", "above_max")
    stopped_statuses = set(frame["status"]) - {"found", "above_max", "below_min"}
    for row_index, configuration in enumerate(rows):
        for column_index, quant in enumerate(quants):
            axis = axes[row_index][column_index]
            panel = frame[(frame["configuration"] == configuration) & (frame["quant"] == quant)]
            notes = []
            attns = [a for a in ATTN_COLORS if a in set(panel["attn"])]
            shared = _shared_frontiers(panel[panel["status"].isin(ran)])
            labelled: set[tuple[str, int, int]] = set()
            for attn_index, attn in enumerate(attns):
                color = ATTN_COLORS[attn]
                # Dodge: attentions with the same frontier would hide each other's lines.
                dodge = 2 ** ((attn_index - (len(attns) - 1) / 2) * FRONTIER_DODGE_LOG2)
                group = panel[panel["attn"] == attn]
                seq = group[group["search"] == "seq"].sort_values("batch")
                line = seq[seq["status"].isin(ran)]
                axis.plot(line["batch"] * dodge, line["frontier"], color=color, linewidth=1.5)
                for status in ("found", "above_max"):
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
                    key = _frontier_point(point)
                    if key in labelled:
                        continue  # one label per value, in grey when attentions share it
                    labelled.add(key)
                    axis.annotate(
                        f"{int(point.frontier)}",
                        (point.batch * dodge, point.frontier),
                        textcoords="offset points",
                        xytext=(5, 4),
                        fontsize=7,
                        color=SHARED_LABEL_COLOR if key in shared else color,
                    )
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
                batch = group[(group["search"] == "batch") & group["status"].isin(ran)]
                batch = batch.sort_values("seq")
                axis.plot(
                    batch["frontier"] * dodge, batch["seq"], color=color, linestyle="--", lw=1
                )
                axis.scatter(
                    batch["frontier"] * dodge,
                    batch["seq"],
                    marker=FRONTIER_MARKERS["batch"][0],
                    color=color,
                    s=40,
                    zorder=4,
                )
                for point in batch.itertuples():
                    key = _frontier_point(point)
                    if key in labelled:
                        continue
                    labelled.add(key)
                    axis.annotate(
                        f"b{int(point.frontier)} @ s{int(point.seq)}",
                        (point.frontier * dodge, point.seq),
                        textcoords="offset points",
                        xytext=(-5, -11),
                        ha="right",
                        fontsize=7,
                        color=SHARED_LABEL_COLOR if key in shared else color,
                    )
                stopped = group[group["status"].isin(stopped_statuses)]
                for status, count in stopped["status"].value_counts().items():
                    notes.append(f"{attn}: {status} ({count} search{'es' * (count > 1)})")
            axis.set_xscale("log", base=2)
            axis.set_yscale("log", base=2)
            axis.margins(x=0.1, y=0.1)
            axis.yaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
            )
            title = f"{configuration} · {quant}" if len(rows) > 1 else f"quantization: {quant}"
            axis.set_title("\n".join([title, *notes]), fontsize=10)
            if column_index == 0:
                axis.set_ylabel("largest sequence length that runs")
            if row_index == len(rows) - 1:
                axis.set_xlabel("batch size")
    batches = set(frame.loc[frame["search"] == "seq", "batch"].dropna().astype(int))
    found = frame.loc[(frame["search"] == "batch") & frame["status"].isin(ran), "frontier"]
    largest = max([*batches, *found.dropna().astype(int)], default=1)
    ticks = sorted(batches | {2**k for k in range(int(largest).bit_length())})
    for axis in axes.flat:
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(b) for b in ticks])
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
            markerfacecolor="none" if key == "below_min" else "grey",
        )
        for key, (marker, label) in FRONTIER_MARKERS.items()
        if key != "stopped"
    ]
    figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)
    budget = frame["memory_budget_gib"].dropna().unique()
    devices = ", ".join(sorted(frame["device"].dropna().astype(str).unique()))
    figure.suptitle(
        "Out-of-memory frontier"
        + (f" ({devices}" if devices else " (")
        + (f", budget {budget[0]:g} GiB)" if len(budget) == 1 else ", whole device)")
        + f": {int(frame['probes'].sum())} probes for {len(frame)} searches, "
        f"brute force at the same step {int(frame['brute_force'].sum())}",
        y=1.02,
    )
    figure.tight_layout()
    return figure


def draw_frontier(frontier_csv: str | Path, png: str, svg: str) -> None:
    """Draw the frontier figure from results/tables/frontier.csv."""
    searches = pd.read_csv(frontier_csv)
    sns.set_theme(style="whitegrid", context="notebook")
    _save(frontier_figure(searches), png, svg)
