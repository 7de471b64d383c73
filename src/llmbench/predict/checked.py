"""Was a prediction checked on a GPU? The committed reference cells
(``results/reference/**/tables/cells.csv``) whose measured after-load, prefill and decode peaks
the predictor matched, grouped by everything the memory model depends on besides the shape
(:data:`KEY`: model, quantization and its knobs, KV cache, attention, dtype, decode mode),
with the batch sizes and sequence lengths each group covers.

A prediction row gets ``checked``:

- ``yes``: cells of its group were measured, every one within :data:`CHECKED_WITHIN` of the
  prediction (all three phases), and its batch and sequence length lie within the measured
  ranges;
- ``shape``: its group was measured within :data:`CHECKED_WITHIN`, but not out to this batch
  or sequence length (the formulas scale, the number was not seen);
- ``no``: its group was never measured, or a measured cell of it was off by more (the note
  says which).

and ``checked_note``: the cells, their folders and the worst difference; for ``no``, which of
the row's settings no measured cell of that model had. The ratios are the tables' own
(``<phase>_measured_over_predicted``, computed by the predictor when the tables were built).
Reads the CSVs with the standard library (``predict`` stays instant).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKED_WITHIN = 0.01
"""Largest |measured / predicted - 1| of any phase for a measured cell to check its group:
the 1 % bar of issues 16 and 17."""

KEY = (
    "model",
    "quant",
    "bnb_compute",
    "int8_threshold",
    "kv_cache",
    "attn",
    "dtype",
    "decode_mode",
)
"""What, besides batch and sequence length, a checked prediction must share with a measured
cell."""

FOUR_BIT_COMPUTE = "bfloat16"
"""What ``bnb_compute: config`` meant in every committed reference cell
(``settings.bnb_4bit_compute_dtype``, checked by the tests): a 4-bit row's ``config`` is
compared as this dtype."""

MEASURED = ("ok", "check_failed")
"""Statuses of a cell whose memory was measured through decode (``check_failed``: it ran, a
truth check about something else failed, e.g. the seed's quantization config not passed)."""

_PHASES = ("load", "prefill", "decode")
_FOUR_BIT = ("nf4", "fp4", "nf4-dq", "fp4-dq", "nf4-not-passed")


@dataclass
class Group:
    """The measured cells of one :data:`KEY`."""

    batches: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    worst: float = 0.0  # largest |ratio - 1| over phases and cells
    folders: set[str] = field(default_factory=set)

    def add(self, batch: int, seq: int, worst: float, folder: str) -> None:
        self.batches.append(batch)
        self.seqs.append(seq)
        self.worst = max(self.worst, worst)
        self.folders.add(folder)


def key_of(row: Mapping[str, Any], four_bit_compute: str = FOUR_BIT_COMPUTE) -> tuple[str, ...]:
    """A row's (or measured cell's) :data:`KEY` values as text, ``bnb_compute: config`` of a
    4-bit quantization read as ``four_bit_compute``."""
    values = {name: str(row.get(name) or "") for name in KEY}
    if values["bnb_compute"] in ("config", "") and values["quant"] in _FOUR_BIT:
        values["bnb_compute"] = four_bit_compute
    return tuple(values[name] for name in KEY)


def _ratios(row: Mapping[str, str]) -> list[float] | None:
    """The three measured/predicted ratios of a table row, or None where one is missing."""
    ratios = []
    for phase in _PHASES:
        text = row.get(f"{phase}_measured_over_predicted") or ""
        try:
            ratios.append(float(text))
        except ValueError:
            return None
    return ratios if all(r == r for r in ratios) else None


def measured_groups(tables: Iterable[Path], root: Path) -> dict[tuple[str, ...], Group]:
    """The :class:`Group` of every key with a measured (:data:`MEASURED`) one-GPU cell that
    has all three ratios, from ``tables`` (cells.csv files; folders named relative to ``root``)."""
    groups: dict[tuple[str, ...], Group] = {}
    for path in tables:
        folder = path.parent.parent.relative_to(root).as_posix()
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                ratios = _ratios(row) if row.get("status") in MEASURED else None
                if ratios is None:
                    continue
                worst = max(abs(r - 1) for r in ratios)
                group = groups.setdefault(key_of(row), Group())
                group.add(int(row["batch"]), int(row["seq"]), worst, folder)
    return groups


@functools.cache
def reference_groups(repo_root: Path) -> dict[tuple[str, ...], Group]:
    """:func:`measured_groups` of every committed reference (``results/reference``)."""
    reference = repo_root / "results" / "reference"
    return measured_groups(sorted(reference.rglob("tables/cells.csv")), reference)


def checked(
    row: Mapping[str, Any],
    groups: Mapping[tuple[str, ...], Group],
    four_bit_compute: str = FOUR_BIT_COMPUTE,
) -> tuple[str, str]:
    """(``yes`` | ``shape`` | ``no``, note) for one prediction row (module docstring)."""
    key = key_of(row, four_bit_compute)
    group = groups.get(key)
    if group is None:
        return "no", _never_measured(key, groups)
    cells = len(group.batches)
    seen = (
        f"{cells} measured cell{'s' if cells != 1 else ''} ({', '.join(sorted(group.folders))}), "
        f"worst {group.worst * 100:.2f} %"
    )
    if group.worst > CHECKED_WITHIN:
        return "no", f"{seen}: off by more than {CHECKED_WITHIN * 100:.0f} %"
    batch, seq = int(row["batch"]), int(row["seq"])
    inside = min(group.batches) <= batch <= max(group.batches) and (
        min(group.seqs) <= seq <= max(group.seqs)
    )
    if inside:
        return "yes", seen
    return "shape", (
        f"{seen}, at batch {_span(group.batches)} and sequence {_span(group.seqs)} only"
    )


def _span(values: list[int]) -> str:
    """``1-16``, or ``8`` where every value is the same."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def _never_measured(key: tuple[str, ...], groups: Mapping[tuple[str, ...], Group]) -> str:
    """Which of ``key``'s settings no checked cell of its model had (all of them when the
    model itself was never checked)."""
    same_model = [k for k in groups if k[0] == key[0]]
    if not same_model:
        return f"model {key[0]} never measured with a prediction to compare"
    missing = [
        f"{name} {value}"
        for position, (name, value) in enumerate(zip(KEY, key, strict=True))
        if position and all(k[position] != value for k in same_model)
    ]
    if missing:
        return f"{key[0]} never measured with {', '.join(missing)}"
    closest = min(same_model, key=lambda k: (_differences(key, k), k))
    differs = ", ".join(
        f"{name} ({mine} here, {theirs} there)"
        for name, mine, theirs in zip(KEY, key, closest, strict=True)
        if mine != theirs
    )
    return (
        f"{key[0]}: each setting measured, never this combination; the closest differs in {differs}"
    )


def _differences(one: tuple[str, ...], other: tuple[str, ...]) -> int:
    return sum(a != b for a, b in zip(one, other, strict=True))
