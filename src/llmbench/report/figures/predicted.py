"""Analytic memory model vs measurement: predicted against measured prefill peak allocated.

May import ``llmbench.report.figures.style``, pandas, seaborn and matplotlib; it reads the
predicted columns that ``aggregate`` wrote, it does not import ``llmbench.predict``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.report.figures.style import ATTN_COLORS, MEASURED, empty


def predicted_vs_measured(cells: pd.DataFrame) -> plt.Figure:
    """Measured vs predicted prefill peak allocated (GiB) of every measured cell.

    Left: measured against the analytic model (predict.py), y = x and a +-10 % band. Right:
    measured / predicted, where differences too small for the left panel show. Colour =
    attention, marker = quantization.
    """
    columns = ("predicted_prefill_peak_allocated_gib", "prefill_peak_allocated_gib")
    ratio = "prefill_measured_over_predicted"
    if any(column not in cells for column in (*columns, ratio)):
        return empty("No prediction in this table (rebuild it with `llmbench tables`).")
    # The ratio is left empty where the comparison does not hold: a phase that failed, or a
    # model spread over several GPUs (the analytic model predicts one device).
    data = cells[cells["status"].isin(MEASURED)].dropna(subset=[*columns, ratio]).copy()
    if data.empty:
        return empty(
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
