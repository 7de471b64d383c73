"""The prediction report of the CLI (``llmbench predict``) and the Snakemake rule
(scripts/predict_grid.py): predictions for every cell of a grid, one row per cell (GiB =
2^30 bytes), as CSV or as a report for a person (a header with the units and the device as
read, a fixed-width table, the peak's breakdown one term a line, the cells that cannot run with
their reason, a closing count), fitted into PyTorch's total of a device read by
``llmbench.host.devicesize`` (``--gpu``, ``--gpu-mem``). The cells that cannot run whatever
the memory are ``refusals``' (``cannot_run``).

Imports ``llmbench.grid`` (the grid's cells), ``llmbench.host.devicesize`` and
``llmbench.predict``'s architecture, checked, refusals, prediction, replay and constants
modules; yaml, lazily.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmbench.grid.spec import QUANTIZED_QUANTS, Cell
from llmbench.host.devicesize import DEFAULT_GPU, read_device
from llmbench.predict.architecture import model_config_for
from llmbench.predict.checked import checked, reference_groups
from llmbench.predict.constants import (
    DECODE_TOKENS,
    DECODE_WARMUP_TOKENS,
    gib,
)
from llmbench.predict.method import Unpredictable, predict_cell
from llmbench.predict.prediction import Prediction
from llmbench.predict.refusals import flag_cannot_run
from llmbench.predict.replay import TERM_NAMES


def iter_predictions(
    cells: Iterable[Cell],
    models: Mapping[str, Any],
    repo_root: Path,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
    decode_tokens: int = DECODE_TOKENS,
    decode_warmup_tokens: int = DECODE_WARMUP_TOKENS,
    prequantize: bool = True,
) -> Iterable[tuple[Cell, Prediction | Unpredictable | None]]:
    """(cell, prediction, or None when the model has no architecture config, or Unpredictable
    with the reason when the memory model cannot handle it: ``predict_cell``). ``prequantize``:
    config.yaml's; a cell loads a pre-quantized checkpoint as ``grid.plan.uses_prequantized``
    says (a pretrained model is quantized on load)."""
    from llmbench.grid.plan import uses_prequantized

    registry = {"prequantize": prequantize, "models": models}
    for cell in cells:
        yield (
            cell,
            predict_cell(
                cell,
                models,
                repo_root,
                bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
                decode_tokens=decode_tokens,
                decode_warmup_tokens=decode_warmup_tokens,
                prequantized=cell.model not in models
                or uses_prequantized(registry, cell.model, cell.quant),
            ),
        )


def prediction_row(
    cell: Cell,
    prediction: Prediction | Unpredictable | None,
    capacity_bytes: int | None,
    *,
    terms: bool,
) -> dict[str, Any]:
    """One row of the prediction table (GiB = 2^30 bytes); an ``Unpredictable`` cell gets
    ``fits: unknown`` (with a device) and its ``reason``."""
    row: dict[str, Any] = asdict(cell)
    if prediction is None:
        row["note"] = "no architecture config"
        return row
    if isinstance(prediction, Unpredictable):  # this model's rows say why, the others go on
        row.update(fits=None if capacity_bytes is None else "unknown", reason=prediction.reason)
        row["note"] = "no prediction"
        return row
    peak = prediction.peak_phase
    quantized = cell.quant in QUANTIZED_QUANTS
    row.update(
        load_allocated_gib=gib(prediction.load.allocated_after),
        prefill_peak_allocated_gib=gib(prediction.prefill.peak_allocated),
        decode_peak_allocated_gib=gib(prediction.decode.peak_allocated),
        peak_phase=peak.phase,
        peak_stage=peak.stage,
        dominant_term=prediction.dominant_term(),
        allocator_slack_gib=gib(prediction.allocator_slack),
        cuda_context_gib=gib(prediction.cuda_context),
        device_need_gib=gib(prediction.device_need),
        gpu_mem_gib=None if capacity_bytes is None else gib(capacity_bytes),
        fits=None if capacity_bytes is None else prediction.fit_verdict(capacity_bytes),
        method=prediction.method,
        method_tag=METHOD_TAGS.get(prediction.method, prediction.method.replace(" ", "-")),
        # yes / no for a quantized cell, empty otherwise: checked's KEY reads it so
        quantized_on_load=(("no", "yes")[prediction.quantized_on_load] if quantized else ""),
        cross_check_peak_allocated_gib=None
        if prediction.cross_check is None
        else gib(max(prediction.cross_check)),
        note="",
    )
    if terms:
        for name, nbytes in peak.peak.to_dict().items():
            row[f"{name}_gib"] = gib(nbytes)
    return row


_TABLE_COLUMNS = (
    ("model", "model", "{}"),
    ("quant", "quant", "{}"),
    ("attn", "attn", "{}"),
    ("dtype", "dtype", "{}"),
    ("batch", "b", "{}"),
    ("seq", "seq", "{}"),
    ("load_allocated_gib", "load", "{:.2f}"),
    ("prefill_peak_allocated_gib", "prefill", "{:.2f}"),
    ("decode_peak_allocated_gib", "decode", "{:.2f}"),
    ("device_need_gib", "need", "{:.2f}"),
    ("fits", "fits", "{}"),
    ("checked", "checked", "{}"),
    ("dominant_term", "dominant", "{}"),
    ("method_tag", "method", "{}"),
)

METHOD_TAGS = {
    "tracer": "tracer",
    "hand replay": "replay",
    "hand replay + quantized KV cache (predict.kvcache)": "replay+kv",
}
"""One-word form of ``Prediction.method`` for the text table (whitespace-separated columns);
the CSV keeps the full name in ``method``."""


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table: peak allocated per phase (GiB), device need (GiB), fits (when
    a device was given) and the dominant term at the peak."""
    columns = list(_TABLE_COLUMNS)
    if all(row.get("fits") is None for row in rows):
        columns = [c for c in columns if c[0] != "fits"]
    if all(not row.get("checked") for row in rows):
        columns = [c for c in columns if c[0] != "checked"]
    rows = [{**row, "variant": _variant(row)} for row in rows]
    if any(row["variant"] for row in rows):  # the optional axes, as in the cell's file name
        columns.insert(6, ("variant", "variant", "{}"))

    def cell_text(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key)
        if key == "checked" and not value:
            return "-"  # no verdict to check: the column stays readable (and splittable)
        if value is None or value == "":  # "-": no number for a run that cannot happen
            note = row.get("note", "") if key == "load_allocated_gib" else ""
            return "-" if row.get("fits") == "unsupported" else note
        return fmt.format(value)

    body = [[cell_text(row, key, fmt) for key, _, fmt in columns] for row in rows]
    header = [title for _, title, _ in columns]
    widths = [max(len(x) for x in column) for column in zip(header, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for line in body:
        lines.append("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _variant(row: Mapping[str, Any]) -> str:
    """The optional axes' path suffix of a row's cell (``Cell.variant``), "" at defaults."""
    return Cell.from_mapping({k: v for k, v in row.items() if k != "variant"}).variant


def cell_label(row: Mapping[str, Any]) -> str:
    """``mistral-7b-v0.3 nf4 eager bfloat16 b2 s3072``: a row's cell on one line, with the
    optional axes' suffix where they are not at their defaults (``... b2 s3072_c-fp32``)."""
    return " ".join(str(row[k]) for k in ("model", "quant", "attn", "dtype")) + (
        f" b{row['batch']} s{row['seq']}{_variant(row)}"
    )


def _rounded(value: float, digits: int) -> str:
    """``value`` to ``digits`` decimals; ``<0.01`` (for 2) when a non-zero value rounds to 0."""
    step = 10.0**-digits
    return f"{value:.{digits}f}" if value >= step / 2 else f"<{step:.{digits}f}"


def format_terms(rows: list[dict[str, Any]]) -> str:
    """One block per cell (rows made with ``terms=True``), within 100 columns for the shipped
    models' names: the verdict, each phase's peak allocated, the device need and its parts,
    then the breakdown at the overall peak, one term a line: GiB and share of the peak,
    non-zero terms only. Cells without a prediction are left out."""
    blocks = []
    for row in rows:
        values = [(n, row[f"{n}_gib"]) for n in TERM_NAMES if row.get(f"{n}_gib")]
        if not values:
            continue
        phase = row["peak_phase"]
        column = {p: f"{p}_peak_allocated_gib" for p in ("prefill", "decode")}
        column["load"] = "load_allocated_gib"  # what stays allocated after the load
        peak = row[column[phase]]
        lines = [
            f"{cell_label(row)}: fits {row.get('fits') or 'unknown'}",
            "  peak allocated: "
            + ", ".join(f"{p} {row[column[p]]:.2f}" for p in ("load", "prefill", "decode")),
            f"  need {row['device_need_gib']:.2f} = peak {peak:.2f} + allocator slack "
            f"{row['allocator_slack_gib']:.2f} + CUDA context {row['cuda_context_gib']:.2f}",
            f"  {phase} peak at {row['peak_stage']}:",
        ]
        lines += [
            f"    {name:<20}{_rounded(v, 2):>7}  {_rounded(100 * v / peak, 1):>5} %"
            for name, v in values
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_reasons(rows: list[dict[str, Any]]) -> str:
    """One entry per cell that has no yes/maybe/no verdict (``unsupported``, ``unknown`` or
    without a prediction), with its reason, wrapped at 100 columns; empty when none."""
    import textwrap

    lines = []
    for row in rows:
        reason = row.get("reason") or row.get("note")
        if reason:
            verdict = row.get("fits") or "unknown"
            text = f"{cell_label(row)}: {verdict}: {reason}"
            lines += textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(["cells that cannot run or have no prediction:", *lines]) if lines else ""


_VERDICTS = (
    ("yes", "fit", "fit"),
    ("maybe", "maybe", "maybe"),
    ("no", "does not fit", "do not fit"),
    ("unsupported", "cannot run", "cannot run"),
    ("unknown", "unknown", "unknown"),
)


def format_summary(rows: list[dict[str, Any]]) -> str:
    """``9 cells: 5 fit, 1 maybe, 2 do not fit, 1 cannot run``: ``fit`` always, the other
    verdicts when some cell has them (``unknown``: no prediction); no verdicts without a
    device (no row names one in ``gpu``)."""
    counts = Counter(row.get("fits") or "unknown" for row in rows)
    if counts["unknown"] == len(rows) and not any(row.get("gpu") for row in rows):
        return f"{len(rows)} cells (no device, no verdict)"
    parts = [
        f"{counts[key]} {one if counts[key] == 1 else many}"
        for key, one, many in _VERDICTS
        if counts[key] or key == "yes"
    ]
    summary = f"{len(rows)} cells: {', '.join(parts)}"
    checks = Counter(row["checked"] for row in rows if row.get("checked"))
    if checks:
        counted = ", ".join(f"{checks[v]} {v}" for v in ("yes", "shape", "no") if checks[v])
        summary += f"; checked on a GPU: {counted}"
    return summary


def format_header(rows: list[dict[str, Any]], *, grid: str, gpu_mem: str | None) -> str:
    """Three lines: the grid and the units; the device as read, nvidia-smi's total and
    PyTorch's (``DeviceSize.describe``), or ``no device``; what ``need`` adds up. Raises
    ValueError for a ``gpu_mem`` that ``read_device`` cannot read."""
    device = "no device" if gpu_mem is None else f"device {read_device(gpu_mem).describe()}"
    return (
        f"llmbench predict: grid {grid}, {len(rows)} cells, one CUDA device; "
        "memory in GiB (2^30 bytes)\n"
        f"{device}\n"
        "need = peak allocated + slack envelope + CUDA context (an upper bound), fitted into "
        "PyTorch's total"
    )


def format_report(
    rows: list[dict[str, Any]], *, grid: str, gpu_mem: str | None, terms: bool = False
) -> str:
    """What ``llmbench predict`` prints for a person: the header, the table (with ``terms``,
    instead, one block per cell with the breakdown of its peak one term a line), the cells
    that cannot run or have no prediction with their reason, and the closing count."""
    body = format_terms(rows) if terms else format_table(rows)
    parts = [format_header(rows, grid=grid, gpu_mem=gpu_mem), body]
    parts += [format_reasons(rows), format_summary(rows)]
    return "\n\n".join(part for part in parts if part)


def format_csv(rows: list[dict[str, Any]]) -> str:
    """CSV of the rows (union of their keys, in first-seen order)."""
    import csv
    import io

    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def grid_prediction_rows(
    grid: str | None,
    *,
    repo_root: Path,
    gpu_mem: str | None = DEFAULT_GPU,
    terms: bool = False,
    run_config: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows for every cell of a grid (default: the config's), with the run's config
    (``run_config``: Snakemake's, ``--configfile``/``--config`` applied; None: config.yaml):
    models, ``bnb_4bit_compute_dtype``, ``measurement.decode_tokens``, ``device``. A cell
    that cannot run gets ``fits: unsupported`` and a ``reason`` (``cannot_run``). ``gpu_mem``:
    the device, a GPU name or its total as nvidia-smi reports it (``llmbench.host.devicesize``;
    cells are fitted into PyTorch's total of it); None: no fit. Raises ValueError for an
    unknown or invalid grid or an unreadable ``gpu_mem``."""
    import yaml

    from llmbench.grid.spec import expand_grid, load_grid

    config = run_config or yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    grid = grid or str(config["grid"])
    models = config["models"]
    cells = expand_grid(load_grid(grid, repo_root / "config", models))
    gpu = None if gpu_mem is None else read_device(gpu_mem)
    capacity = None if gpu is None else gpu.torch_total
    measurement = config.get("measurement") or {}
    decode = (
        int(measurement.get("decode_tokens", DECODE_TOKENS)),
        int(measurement.get("decode_warmup_tokens", DECODE_WARMUP_TOKENS)),
    )
    four_bit = str(config.get("bnb_4bit_compute_dtype", "bfloat16"))
    device = "cpu" if config.get("device") == "cpu" else "cuda"
    rows = [
        prediction_row(cell, prediction, capacity, terms=terms)
        for cell, prediction in iter_predictions(
            cells,
            models,
            repo_root,
            bnb_4bit_compute_dtype=four_bit,
            decode_tokens=decode[0],
            decode_warmup_tokens=decode[1],
            prequantize=bool(config.get("prequantize", True)),
        )
    ]
    configs: dict[str, Any] = {}
    for row in rows:
        if row["model"] not in configs:
            try:
                configs[row["model"]] = model_config_for(row["model"], models, repo_root)
            except (OSError, ValueError):  # unreadable or not JSON: the prediction says why
                configs[row["model"]] = None
    placed = str(config.get("device_map") or "auto")
    rows = [flag_cannot_run(r, device, configs[r["model"]], decode[0], placed) for r in rows]
    if gpu is not None:  # every row, those without a prediction too (csv: one device)
        for row in rows:
            row.update(gpu=gpu.label, gpu_mem_gib=gib(gpu.torch_total))
    groups = reference_groups(repo_root)
    for row in rows:
        verdict, note = ("", "")
        if row.get("fits") in ("yes", "maybe", "no"):
            verdict, note = checked(row, groups, four_bit, decode)
        row.update(checked=verdict, checked_note=note)
    return rows
