"""Analytic memory model vs measurement: predicted against measured prefill peak allocated.

Every marker is one cell (no estimator); the cells left out (did not run, several GPUs, CPU,
no prediction) are counted under the figure. Lines and bands carry ``style.REFERENCE``.

May import ``llmbench.grid.spec`` (quantizations, ``Cell`` for the labels),
``llmbench.measure.failures`` (statuses, phases), ``llmbench.report.figures.style``,
``llmbench.report.figures.marks``, pandas, seaborn and matplotlib; it reads the predicted
columns that ``aggregate`` wrote, it does not import ``llmbench.predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.grid.spec import QUANTS, Cell
from llmbench.measure.failures import MEASURED
from llmbench.report.figures.marks import IDENTITY, NotDrawn
from llmbench.report.figures.style import ATTN_COLORS, REFERENCE

COLUMNS = ("predicted_prefill_peak_allocated_gib", "prefill_peak_allocated_gib")
RATIO = "prefill_measured_over_predicted"


def _left_out(cells: pd.DataFrame, drawn: pd.DataFrame) -> str:
    """The explicit filter, in words: which cells are not drawn, and why."""
    rest = cells.drop(index=drawn.index)
    unrun = ~rest["status"].isin(MEASURED)
    several = ~unrun & (rest["n_devices"].fillna(0) > 1)
    cpu = ~unrun & ~several & (rest.get("device", pd.Series(index=rest.index)) == "cpu")
    other = len(rest) - int(unrun.sum() + several.sum() + cpu.sum())
    parts = [
        f"{int(count)} {what}"
        for count, what in (
            (unrun.sum(), "did not run"),
            (several.sum(), "spread over several GPUs (the model predicts one device)"),
            (cpu.sum(), "ran on the CPU"),
            (other, "have no prediction or no measurement"),
        )
        if count
    ]
    drawn_text = f"Every marker is one cell: {len(drawn)} measured one-GPU CUDA cells"
    return drawn_text + (f"; not drawn: {', '.join(parts)}." if parts else ".")


@dataclass(frozen=True)
class Stacked:
    """One marker that several cells of one attention share (predicted and measured to
    1 MiB): markers of one attention have one size, so the last drawn hides the rest.
    ``labels``: each cell's quantization, optional axes' path suffix (``_c-fp32``, ``_t0``,
    ``_kv-quanto-int4``) and shape; ``differ``: the table columns whose values differ among
    them."""

    predicted_gib: float
    measured_gib: float
    attn: str
    labels: list[str]
    differ: list[str]


LISTED = 12
"""Up to this many shared markers the footnote names each one's cells; beyond, it counts
them and says in which columns their cells differ."""

_AXES = tuple(column for column in IDENTITY if column != "attn")
"""Columns in which a shared marker's cells may differ (one marker is one attention)."""


def _stacked(data: pd.DataFrame) -> list[Stacked]:
    """Every :class:`Stacked` marker of ``data``."""
    place = data.assign(_x=data[COLUMNS[0]].round(3), _y=data[COLUMNS[1]].round(3))
    models = data["model"].nunique() > 1 if "model" in data else False
    return [
        Stacked(
            x,
            y,
            attn,
            sorted(_label(row, models) for _, row in group.iterrows()),
            [c for c in _AXES if c in group and group[c].astype(str).nunique() > 1],
        )
        for (x, y, attn), group in place.groupby(["_x", "_y", "attn"])
        if len(group) > 1
    ]


def _label(row: pd.Series, model: bool = False) -> str:
    """``nf4_c-bf16 b1 s8192``: one cell of a table row, after its model where ``model``
    (no-break spaces: a footnote's line never breaks inside a label)."""
    cell = Cell.from_mapping({k: v for k, v in row.items() if not pd.isna(v)})
    label = f"{cell.quant}{cell.variant}\u00a0b{cell.batch}\u00a0s{cell.seq}"
    return f"{cell.model}\u00a0{label}" if model else label


def _mark_stacked(axis: plt.Axes, stacked: list[Stacked]) -> None:
    """'×n' beside each shared marker of the measured-vs-predicted panel (the footnote says
    which cells; the ratio panel, where the markers crowd along 1.0, is left unlabelled)."""
    for marker in stacked:
        axis.annotate(
            f"×{len(marker.labels)}",
            (marker.predicted_gib, marker.measured_gib),
            xytext=(-6, 5),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            gid="count",
        )


def _stacked_note(stacked: list[Stacked]) -> str:
    """The footnote line(s) on the shared markers: each one's cells (up to :data:`LISTED`
    markers), else how many there are and in which columns their cells differ."""
    import textwrap

    if not stacked:
        return ""
    head = "One marker for several cells (same attention, to 1 MiB): "
    if len(stacked) <= LISTED:
        text = head + "; ".join(
            f"×{len(m.labels)} {m.attn} at {m.predicted_gib:.2f} GiB ({', '.join(m.labels)})"
            for m in stacked
        )
    else:
        sizes = sorted({len(m.labels) for m in stacked})
        span = f"×{sizes[0]}" if len(sizes) == 1 else f"×{sizes[0]}–×{sizes[-1]}"
        differ = list(dict.fromkeys(c for m in stacked for c in m.differ))
        text = head + (
            f"{len(stacked)} markers ({span}), whose cells differ only in "
            f"{', '.join(differ)} (cells.csv lists them)"
        )
    return "\n" + "\n".join(textwrap.wrap(text + ".", 170, break_on_hyphens=False))


def _style(data: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Colour and size per attention, marker per quantization; the rows sorted so that the
    biggest markers are drawn first."""
    hue_order = [a for a in ATTN_COLORS if a in set(data["attn"])]
    quants = [q for q in QUANTS if q in set(data["quant"])]
    quants += sorted(set(data["quant"]) - set(quants))
    # Implementations that measure the same (sdpa and flash_attention_2 often do) would hide
    # each other: earlier ones get bigger markers, drawn first, later ones sit inside them.
    sizes = {attn: 50 + 45 * (len(hue_order) - 1 - i) for i, attn in enumerate(hue_order)}
    data = data.assign(_size=data["attn"].map(sizes)).sort_values("_size", ascending=False)
    style: dict[str, Any] = {"hue": "attn", "palette": ATTN_COLORS, "hue_order": hue_order}
    style.update(size="attn", sizes=sizes, size_order=hue_order)
    style.update(style="quant", style_order=quants, alpha=0.9, edgecolor="black")
    return data, style


def _left(axis: plt.Axes, data: pd.DataFrame, style: dict[str, Any]) -> None:
    """Measured against predicted, with y = x and a ±10 % band."""
    top = 1.08 * float(data[list(COLUMNS)].max().max())
    line = [0.0, top]
    band = axis.fill_between(line, [0.0, 0.9 * top], [0.0, 1.1 * top], color="grey", alpha=0.15)
    band.set_gid(REFERENCE)
    axis.plot(line, line, color="grey", linewidth=1, gid=REFERENCE)
    sns.scatterplot(data=data, x=COLUMNS[0], y=COLUMNS[1], ax=axis, legend=False, **style)
    axis.set_xlim(0, top)
    axis.set_ylim(0, top)
    axis.set_xlabel("predicted prefill peak allocated (GiB)")
    axis.set_ylabel("measured prefill peak allocated (GiB)")
    axis.set_title("measured vs predicted (grey: y = x ± 10 %)")


def _right(axis: plt.Axes, data: pd.DataFrame, style: dict[str, Any]) -> None:
    """Measured / predicted, with ±5 % and ±10 % bands; the errors in the title."""
    axis.axhspan(0.9, 1.1, color="grey", alpha=0.12, label="±10 %", gid=REFERENCE)
    axis.axhspan(0.95, 1.05, color="grey", alpha=0.18, label="±5 %", gid=REFERENCE)
    axis.axhline(1.0, color="grey", linewidth=1, gid=REFERENCE)
    sns.scatterplot(data=data, x=COLUMNS[0], y="ratio", ax=axis, **style)
    spread = max(0.12, 1.2 * float((data["ratio"] - 1).abs().max()))
    axis.set_ylim(1 - spread, 1 + spread)
    axis.set_xlabel("predicted prefill peak allocated (GiB)")
    axis.set_ylabel("measured / predicted")
    errors = (data["ratio"] - 1).abs()
    axis.set_title(
        f"{len(data)} cells: max |error| {errors.max():.2%}, median {errors.median():.2%}"
    )
    axis.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)


def predicted_vs_measured(cells: pd.DataFrame) -> plt.Figure:
    """Measured vs predicted prefill peak allocated (GiB) of every measured cell.

    Left: measured against the analytic model (predict.py), y = x and a +-10 % band. Right:
    measured / predicted, where differences too small for the left panel show. Colour =
    attention, marker = quantization.
    """
    if any(column not in cells for column in (*COLUMNS, RATIO)):
        raise NotDrawn("not drawn: no prediction in this table (rebuild it: `llmbench tables`)")
    # The ratio is left empty where the comparison does not hold: a phase that failed, or a
    # model spread over several GPUs (the analytic model predicts one device).
    data = cells[cells["status"].isin(MEASURED)].dropna(subset=[*COLUMNS, RATIO]).copy()
    if data.empty:
        raise NotDrawn(
            "not drawn: no measured one-GPU CUDA cell with a prediction to compare\n"
            "(the analytic model predicts one device)."
        )
    data, style = _style(data.assign(ratio=data[RATIO]))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    stacked = _stacked(data)
    _left(left, data, style)
    _mark_stacked(left, stacked)
    _right(right, data, style)
    figure.suptitle("Analytic memory model vs measurement: prefill peak allocated", y=1.0)
    figure.tight_layout()
    note = _left_out(cells, data) + _stacked_note(stacked)
    figure.text(0.5, -0.01, note, ha="center", va="top", fontsize=8)
    return figure
