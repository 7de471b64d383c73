"""The prediction report of the CLI (``llmbench predict``) and the Snakemake rule
(scripts/predict_grid.py): predictions for every cell of a grid, one row per cell (GiB =
2^30 bytes), as a fixed-width text table or as CSV; and memory sizes read from text
(``--gpu-mem``).

Imports ``llmbench.grid.spec`` (the grid's cells) and ``llmbench.predict``'s architecture,
prediction, replay and constants modules; yaml, lazily.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.predict.architecture import model_config_for
from llmbench.predict.constants import GIB, gib
from llmbench.predict.prediction import Prediction, predict
from llmbench.predict.replay import TERM_NAMES


def iter_predictions(
    cells: Iterable[Cell],
    models: Mapping[str, Any],
    repo_root: Path,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
    decode_tokens: int = 32,
) -> Iterable[tuple[Cell, Prediction | None]]:
    """(cell, prediction or None when the model has no architecture config)."""
    for cell in cells:
        config = model_config_for(cell.model, models, repo_root)
        if config is None:
            yield cell, None
            continue
        yield (
            cell,
            predict(
                config,
                cell,
                bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
                decode_tokens=decode_tokens,
            ),
        )


_UNITS = {
    "": GIB,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str) -> int:
    """``80GiB``, ``79.18 GiB``, ``85GB``, ``81920MiB`` or a bare number of GiB -> bytes.

    Units: b, kb/mb/gb/tb (10^3k), kib/mib/gib/tib (2^10k), case and spaces ignored; raises
    ValueError for anything else."""
    cleaned = text.strip().replace(" ", "").lower()
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number) :]
    if unit not in _UNITS or not number:
        raise ValueError(f"cannot read a memory size from {text!r} (e.g. 80GiB, 85GB, 81920MiB)")
    return int(float(number) * _UNITS[unit])


def prediction_row(
    cell: Cell, prediction: Prediction | None, capacity_bytes: int | None, *, terms: bool
) -> dict[str, Any]:
    """One row of the prediction table (GiB = 2^30 bytes)."""
    row: dict[str, Any] = asdict(cell)
    if prediction is None:
        row["note"] = "no architecture config"
        return row
    peak = prediction.peak_phase
    row.update(
        load_peak_allocated_gib=gib(prediction.load.peak_allocated),
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
    ("load_peak_allocated_gib", "load", "{:.2f}"),
    ("prefill_peak_allocated_gib", "prefill", "{:.2f}"),
    ("decode_peak_allocated_gib", "decode", "{:.2f}"),
    ("device_need_gib", "need", "{:.2f}"),
    ("fits", "fits", "{}"),
    ("dominant_term", "dominant", "{}"),
)


def format_table(rows: list[dict[str, Any]], *, terms: bool) -> str:
    """Fixed-width text table: peaks per phase (GiB), device need, fits, dominant term; with
    ``terms``, the breakdown (GiB) at the overall peak, non-zero terms only."""
    columns = list(_TABLE_COLUMNS)
    if rows and rows[0].get("fits") is None:
        columns = [c for c in columns if c[0] != "fits"]
    if terms:
        columns.append(("peak_stage", "peak at", "{}"))
        used = [n for n in TERM_NAMES if any(row.get(f"{n}_gib") for row in rows)]
        columns += [(f"{n}_gib", n, "{:.2f}") for n in used]

    def cell_text(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key)
        if value is None or value == "":
            return row.get("note", "") if key == "load_peak_allocated_gib" else ""
        return fmt.format(value)

    body = [[cell_text(row, key, fmt) for key, _, fmt in columns] for row in rows]
    header = [title for _, title, _ in columns]
    widths = [max(len(x) for x in column) for column in zip(header, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for line in body:
        lines.append("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines)


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
    gpu_mem: str | None = "80GiB",
    terms: bool = False,
) -> list[dict[str, Any]]:
    """Rows for every cell of a grid (default: the config's), reading config/config.yaml for
    the model registry, ``bnb_4bit_compute_dtype`` and ``measurement.decode_tokens``."""
    import yaml

    from llmbench.grid.spec import expand_grid, load_grid

    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    grid = grid or str(config["grid"])
    models = config["models"]
    cells = expand_grid(load_grid(grid, repo_root / "config", models))
    capacity = None if gpu_mem is None else parse_bytes(gpu_mem)
    measurement = config.get("measurement") or {}
    return [
        prediction_row(cell, prediction, capacity, terms=terms)
        for cell, prediction in iter_predictions(
            cells,
            models,
            repo_root,
            bnb_4bit_compute_dtype=config.get("bnb_4bit_compute_dtype", "bfloat16"),
            decode_tokens=int(measurement.get("decode_tokens", 32)),
        )
    ]
