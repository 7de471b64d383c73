"""The same cells measured on two GPUs, side by side: one row per cell, both GPUs' numbers.

Input: two ``cells.csv`` tables of the same grid (e.g. ``results/reference/h100/extended`` and
``results/reference/h200/extended``). A cell is identified by :data:`CELL_KEYS`; each table
must hold each cell once and come from one GPU model (else :class:`ValueError`, since a row
would otherwise mix numbers of different cells or GPUs). Nothing is averaged: every value is
one measured cell's, and a ratio is computed only where the cell ran (``ok``) on both GPUs;
cells whose status differs (e.g. out of memory on the smaller GPU) keep both statuses and no
ratio. Memory in GiB (2^30 B), latency in ms, MBU/MFU as fractions of each GPU's datasheet
peak (``peak_source`` in each cell JSON).

May import pandas, llmbench's constants and the grid's optional axes (``llmbench.grid.spec``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from llmbench import GIB, MIB
from llmbench.grid.spec import OPTIONAL_AXES

CELL_KEYS = (
    "model",
    "quant",
    "attn",
    "sdpa_backend",
    "dtype",
    "batch",
    "seq",
    *OPTIONAL_AXES,
)
"""Columns that identify a cell in cells.csv (the grid's axes; a table written before the
optional axes existed gets their defaults, the values its cells ran with)."""

METRICS = (
    "load_allocated_gib",
    "prefill_peak_allocated_gib",
    "prefill_peak_reserved_gib",
    "decode_peak_allocated_gib",
    "prefill_ms_p50",
    "decode_ms_per_token_p50",
    "mfu",
    "mbu",
)
"""Measured columns compared, in the order they are written."""

SAME_WITHIN = 1e-6
"""Relative difference under which a memory number counts as the same on both GPUs."""


def gpu_name(cells: pd.DataFrame, where: str) -> str:
    """The one GPU model a table was measured on; raises ValueError for none or several."""
    names = sorted(cells["device_name"].dropna().unique())
    if len(names) != 1:
        raise ValueError(f"{where}: expected cells of one GPU model, found {names or 'none'}")
    return str(names[0])


def _one_row_per_cell(cells: pd.DataFrame, where: str) -> pd.DataFrame:
    keyed = cells.assign(sdpa_backend=cells["sdpa_backend"].astype("object").fillna(""))
    for axis, values in OPTIONAL_AXES.items():
        keyed[axis] = keyed[axis].fillna(values[0]) if axis in keyed else values[0]
    duplicated = keyed.duplicated(list(CELL_KEYS), keep=False)
    if duplicated.any():
        first = keyed.loc[duplicated, list(CELL_KEYS)].iloc[0].to_dict()
        raise ValueError(f"{where}: cell {first} appears more than once")
    return keyed


def compare(first: pd.DataFrame, second: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """One row per cell measured on both GPUs (inner join on :data:`CELL_KEYS`).

    Columns: the cell keys; ``gpu_<i>`` (device name), ``status_<i>`` and each metric as
    ``<metric>_<i>`` for the two tables (``i`` = ``names``, e.g. ``h100``/``h200``);
    ``<metric>_ratio`` = second / first where both cells are ``ok`` (else empty); and
    ``prefill_memory_same`` / ``decode_memory_same`` (that phase's peak allocated equal
    within :data:`SAME_WITHIN`; empty unless both ran).
    """
    a, b = names
    left = _one_row_per_cell(first, a)
    right = _one_row_per_cell(second, b)
    columns = [*CELL_KEYS, "device_name", "status", *METRICS]
    merged = left[columns].merge(
        right[columns], on=list(CELL_KEYS), suffixes=(f"_{a}", f"_{b}"), validate="one_to_one"
    )
    merged = merged.rename(columns={f"device_name_{a}": f"gpu_{a}", f"device_name_{b}": f"gpu_{b}"})
    both_ok = (merged[f"status_{a}"] == "ok") & (merged[f"status_{b}"] == "ok")
    for metric in METRICS:
        ratio = merged[f"{metric}_{b}"] / merged[f"{metric}_{a}"]
        merged[f"{metric}_ratio"] = ratio.where(both_ok)
    for phase in ("prefill", "decode"):
        ratio = merged[f"{phase}_peak_allocated_gib_ratio"]
        merged[f"{phase}_memory_same"] = ((ratio - 1).abs() <= SAME_WITHIN).where(both_ok)
    return merged.sort_values(list(CELL_KEYS)).reset_index(drop=True)


def compare_folders(first: Path, second: Path, names: Sequence[str]) -> pd.DataFrame:
    """:func:`compare` of ``<folder>/tables/cells.csv`` of two reference runs; raises
    FileNotFoundError when a table is missing and ValueError as :func:`compare` does."""
    tables = []
    for folder in (first, second):
        path = Path(folder) / "tables" / "cells.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no cells table (run `llmbench.cli tables` first)")
        cells = pd.read_csv(path)
        gpu_name(cells, str(path))
        tables.append(cells)
    return compare(tables[0], tables[1], names)


def summary_lines(table: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """A few lines for a README: how many cells, which differ in status, memory equality and
    the range (min–median–max) of each latency/efficiency ratio over the cells ok on both."""
    a, b = names
    both = table["mbu_ratio"].notna() | table["prefill_ms_p50_ratio"].notna()
    lines = [f"{len(table)} cells on both GPUs, {int(both.sum())} ok on both"]
    differ = table[table[f"status_{a}"] != table[f"status_{b}"]]
    for _, row in differ.iterrows():
        cell = "/".join(str(row[k]) for k in ("quant", "attn", "dtype"))
        lines.append(
            f"status differs: {cell} b{row['batch']} s{row['seq']}: "
            f"{a} {row[f'status_{a}']}, {b} {row[f'status_{b}']}"
        )
    for phase in ("prefill", "decode"):
        same = table[f"{phase}_memory_same"].dropna()
        diff_bytes = (
            (table[f"{phase}_peak_allocated_gib_{b}"] - table[f"{phase}_peak_allocated_gib_{a}"])
            .abs()
            .where(table[f"{phase}_memory_same"].notna())
            * GIB
        ).round()
        lines.append(
            f"{phase} peak allocated the same on both GPUs (within {SAME_WITHIN:g} relative):"
            f" {int(same.sum())} of {len(same)} cells ok on both, {int((diff_bytes == 0).sum())}"
            f" to the byte (largest difference {diff_bytes.max() / MIB:.2f} MiB)"
        )
    for metric in ("prefill_ms_p50", "decode_ms_per_token_p50", "mfu", "mbu"):
        ratio = table[f"{metric}_ratio"].dropna()
        if len(ratio):
            lines.append(
                f"{metric} {b}/{a}, min – median – max over {len(ratio)} cells ok on both:"
                f" {ratio.min():.2f} – {ratio.median():.2f} – {ratio.max():.2f}"
            )
    return lines
