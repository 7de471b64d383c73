"""Analytic memory model vs measurement: predicted against measured peak allocated, at the
prefill peak and, where the table has them, at the decode peak (a row of panels each).

Every marker is one cell (no estimator), except where cells of one attention predict and
measure the same to 1 MiB: they share a marker, labelled ×n beside it where labels do not
crowd, and the footnote says which. The cells left out (failed, several GPUs, CPU, no
prediction) are counted under the figure. Lines and bands carry ``style.REFERENCE``.

May import ``llmbench.grid.spec`` (quantizations, ``Cell`` for the labels),
``llmbench.measure.failures`` (statuses, phases), ``llmbench.report.figures.style``,
``llmbench.report.figures.marks``, pandas, seaborn and matplotlib; it reads the predicted
columns that ``aggregate`` wrote, it does not import ``llmbench.predict``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbench.grid.spec import QUANTS, Cell
from llmbench.measure.failures import MEASURED
from llmbench.report.figures.marks import IDENTITY, NotDrawn
from llmbench.report.figures.style import ATTN_COLORS, REFERENCE, failed_count


@dataclass(frozen=True)
class Phase:
    """The peak a row of panels compares: its predicted and measured columns and their ratio."""

    name: str
    predicted: str
    measured: str
    ratio: str


PHASES = (
    Phase(
        "prefill",
        "predicted_prefill_peak_allocated_gib",
        "prefill_peak_allocated_gib",
        "prefill_measured_over_predicted",
    ),
    Phase(
        "decode",
        "predicted_decode_peak_allocated_gib",
        "decode_peak_allocated_gib",
        "decode_measured_over_predicted",
    ),
)
"""Prefill is drawn whenever the table has predictions; decode where it has its columns."""
COLUMNS = (PHASES[0].predicted, PHASES[0].measured)
RATIO = PHASES[0].ratio


def _left_out(cells: pd.DataFrame, drawn: pd.DataFrame, phase: Phase) -> str:
    """The explicit filter, in words: which cells a phase's panels leave out, and why."""
    rest = cells.drop(index=drawn.index)
    failed = ~rest["status"].isin(MEASURED)
    several = ~failed & (rest["n_devices"].fillna(0) > 1)
    cpu = ~failed & ~several & (rest.get("device", pd.Series(index=rest.index)) == "cpu")
    other = len(rest) - int(failed.sum() + several.sum() + cpu.sum())
    parts = [
        what
        for count, what in (
            (failed.sum(), failed_count(rest.loc[failed, "status"])),
            (several.sum(), f"{several.sum()} spread over several GPUs (the model predicts one)"),
            (cpu.sum(), f"{cpu.sum()} ran on the CPU"),
            (other, f"{other} have no {phase.name} prediction or measurement"),
        )
        if count
    ]
    text = f"{phase.name}: {len(drawn)} measured one-GPU CUDA cells"
    return text + (f"; not drawn: {', '.join(parts)}" if parts else "")


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
    place = data.assign(_x=data["_predicted"].round(3), _y=data["_measured"].round(3))
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


LABEL_PLACES = ((-6, 5, "right", "bottom"), (6, -5, "left", "top"), (6, 5, "left", "bottom"))
"""Where a shared marker's ×n label may go, in turn (offset in points, alignment): above left,
below right, above right; a label that would overlap another in all three is left out."""


def _boxes(x: float, y: float, text: str) -> list[tuple[float, float, float, float]]:
    """The box (points) a 7-point label at display point (x, y) takes at each place."""
    width, height = 4.2 * len(text), 8.0
    boxes = []
    for dx, dy, ha, va in LABEL_PLACES:
        left = x + dx - (width if ha == "right" else 0)
        bottom = y + dy - (height if va == "top" else 0)
        boxes.append((left, bottom, left + width, bottom + height))
    return boxes


def _overlaps(box: tuple[float, ...], others: list[tuple[float, ...]]) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def _mark_stacked(axis: plt.Axes, stacked: list[Stacked]) -> int:
    """'×n' beside each shared marker of the measured-vs-predicted panel, one label per point
    ('×3/×2' where two attentions' shared markers sit one inside the other, the bigger's count
    first), each where it overlaps no other label; returns how many points were left without
    one (the footnote says so). The ratio panel, where markers crowd along 1.0, has none."""
    points: dict[tuple[float, float], list[Stacked]] = {}
    for marker in stacked:
        points.setdefault((marker.predicted_gib, marker.measured_gib), []).append(marker)
    order = [attn for attn in ATTN_COLORS]
    to_points = 72 / axis.figure.dpi
    placed: list[tuple[float, ...]] = []
    left_out = 0
    for (x, y), markers in sorted(points.items(), key=lambda item: -item[0][1]):
        markers.sort(key=lambda m: order.index(m.attn) if m.attn in order else len(order))
        text = "/".join(f"×{len(m.labels)}" for m in markers)
        px, py = (v * to_points for v in axis.transData.transform((x, y)))
        free = [i for i, box in enumerate(_boxes(px, py, text)) if not _overlaps(box, placed)]
        if not free:
            left_out += 1
            continue
        placed.append(_boxes(px, py, text)[free[0]])
        dx, dy, ha, va = LABEL_PLACES[free[0]]
        axis.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=7,
            gid="count",
        )
    return left_out


def _stacked_note(stacked: list[Stacked], phase: Phase, unlabelled: int) -> list[str]:
    """The footnote line(s) on a phase's shared markers: each one's cells (up to
    :data:`LISTED` markers), else how many there are and in which columns their cells differ;
    and how many were left unlabelled where labels would crowd."""
    if not stacked:
        return []
    head = (
        f"{phase.name}: a shared marker (×n beside it) is n cells of one attention that "
        "predict and measure the same to 1 MiB (×a/×b: two attentions' shared markers, the "
        "smaller inside the bigger): "
    )
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
    if unlabelled:
        text += f"; {unlabelled} points left unlabelled where their labels would crowd"
    return textwrap.wrap(text + ".", 170, break_on_hyphens=False)


def _left(axis: plt.Axes, data: pd.DataFrame, style: dict[str, Any], phase: Phase) -> None:
    """Measured against predicted, with y = x and a ±10 % band."""
    top = 1.08 * float(data[["_predicted", "_measured"]].max().max())
    line = [0.0, top]
    band = axis.fill_between(line, [0.0, 0.9 * top], [0.0, 1.1 * top], color="grey", alpha=0.15)
    band.set_gid(REFERENCE)
    axis.plot(line, line, color="grey", linewidth=1, gid=REFERENCE)
    sns.scatterplot(data=data, x="_predicted", y="_measured", ax=axis, legend=False, **style)
    axis.set_xlim(0, top)
    axis.set_ylim(0, top)
    axis.set_xlabel(f"predicted {phase.name} peak allocated (GiB)")
    axis.set_ylabel(f"measured {phase.name} peak allocated (GiB)")
    axis.set_title(f"{phase.name} peak: measured vs predicted (grey: y = x ± 10 %)")


def _right(
    axis: plt.Axes, data: pd.DataFrame, style: dict[str, Any], phase: Phase, legend: bool
) -> None:
    """Measured / predicted, with ±5 % and ±10 % bands; the errors in the title."""
    axis.axhspan(0.9, 1.1, color="grey", alpha=0.12, label="±10 %", gid=REFERENCE)
    axis.axhspan(0.95, 1.05, color="grey", alpha=0.18, label="±5 %", gid=REFERENCE)
    axis.axhline(1.0, color="grey", linewidth=1, gid=REFERENCE)
    sns.scatterplot(data=data, x="_predicted", y="ratio", ax=axis, legend=legend, **style)
    spread = max(0.12, 1.2 * float((data["ratio"] - 1).abs().max()))
    axis.set_ylim(1 - spread, 1 + spread)
    axis.set_xlabel(f"predicted {phase.name} peak allocated (GiB)")
    axis.set_ylabel("measured / predicted")
    errors = (data["ratio"] - 1).abs()
    axis.set_title(
        f"{phase.name} peak, {len(data)} cells: max |error| {errors.max():.2%}, "
        f"median {errors.median():.2%}"
    )
    if legend:
        axis.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)


def _phase_data(cells: pd.DataFrame, phase: Phase) -> pd.DataFrame:
    """The measured cells with a prediction of ``phase``, under the panels' column names."""
    if any(column not in cells for column in (phase.predicted, phase.measured, phase.ratio)):
        return cells.iloc[:0]
    # The ratio is left empty where the comparison does not hold: a phase that failed, or a
    # model spread over several GPUs (the analytic model predicts one device).
    data = cells[cells["status"].isin(MEASURED)]
    data = data.dropna(subset=[phase.predicted, phase.measured, phase.ratio]).copy()
    return data.assign(
        _predicted=data[phase.predicted], _measured=data[phase.measured], ratio=data[phase.ratio]
    )


def predicted_vs_measured(cells: pd.DataFrame) -> plt.Figure:
    """Measured vs predicted peak allocated (GiB) of every measured cell: a row for the
    prefill peak and, where the table has them, one for the decode peak.

    Left: measured against the analytic model (predict.py), y = x and a +-10 % band. Right:
    measured / predicted, where differences too small for the left panel show. Colour =
    attention, marker = quantization.
    """
    if any(column not in cells for column in (*COLUMNS, RATIO)):
        raise NotDrawn("not drawn: no prediction in this table (rebuild it: `llmbench tables`)")
    phases = [(p, _phase_data(cells, p)) for p in PHASES]
    phases = [(p, d) for i, (p, d) in enumerate(phases) if i == 0 or not d.empty]
    if phases[0][1].empty:
        raise NotDrawn(
            "not drawn: no measured one-GPU CUDA cell with a prediction to compare\n"
            "(the analytic model predicts one device)."
        )
    figure, axes = plt.subplots(len(phases), 2, figsize=(12, 5 * len(phases)), squeeze=False)
    drawn = []
    for (phase, data), (left, right) in zip(phases, axes, strict=True):
        data, style = _style(data)
        _left(left, data, style, phase)
        _right(right, data, style, phase, legend=phase is phases[0][0])
        drawn.append((phase, data, _stacked(data), left))
    names = " and ".join(p.name for p, _ in phases)
    figure.suptitle(f"Analytic memory model vs measurement: {names} peak allocated", y=1.0)
    figure.tight_layout()
    lines = []
    for phase, data, stacked, left in drawn:
        unlabelled = _mark_stacked(left, stacked)
        lines += [_left_out(cells, data, phase), *_stacked_note(stacked, phase, unlabelled)]
    if not any(stacked for _, _, stacked, _ in drawn):
        lines.insert(0, "Every marker is one cell.")
    figure.text(0.5, -0.01, "\n".join(lines), ha="center", va="top", fontsize=8)
    return figure
