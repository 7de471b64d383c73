"""Was a prediction checked on a GPU? The committed reference cells
(``results/reference/**/tables/cells.csv``) whose measured after-load, prefill and decode peaks
the predictor matched, grouped by everything the memory model depends on besides the shape
(:data:`KEY`: model, quantization and its knobs, whether it quantized on load, KV cache,
attention, dtype, decode mode, placement),
with the batch sizes and sequence lengths each group covers.

A prediction row gets ``checked``:

- ``yes``: cells of its group were measured, every one within :data:`CHECKED_WITHIN` of the
  prediction (after load, the load's peak, prefill and decode), and the row lies between
  measured cells: one at a batch and sequence length no larger than the row's, one at both
  no smaller;
- ``shape``: its group was measured within :data:`CHECKED_WITHIN`, but not around this batch
  and sequence length (the formulas scale, the number was not seen), or the run decodes
  another number of tokens than the references (:data:`REFERENCE_DECODE`);
- ``no``: its group was never measured, or a measured cell of it was off by more (the note
  says which).

and ``checked_note``: the cells, their folders and the worst difference; for ``no``, which of
the row's settings no measured cell of that model had; and where a reference cell of exactly
this setting and shape ran out of memory, that too (its allocations were never all made).
The ratios are the tables' own (``<phase>_measured_over_predicted``, computed by the
predictor when the tables were built); cells spread over several GPUs are left out.
Reads the CSVs with the standard library (``predict`` stays instant).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbench.grid.spec import (
    FOUR_BIT_QUANTS,
    QUANTIZED_QUANTS,
    quantizes_on_load,
    recorded_prequantized,
)

CHECKED_WITHIN = 0.01
"""Largest |measured / predicted - 1| of any phase for a measured cell to check its group:
the 1 % bar of issues 16 and 17."""

KEY = (
    "model",
    "quant",
    "quantized_on_load",
    "bnb_compute",
    "int8_threshold",
    "kv_cache",
    "attn",
    "dtype",
    "decode_mode",
    "device_map",
    "max_memory",
)
"""What, besides batch and sequence length, a checked prediction must share with a measured
cell. ``quantized_on_load`` (``yes``/``no`` for a quantized cell, empty otherwise): a
prediction row's own column, a measured cell's from its ``checkpoint_kind``
(``grid.spec.quantizes_on_load``); quantizing on load adds a transient to the load's peak
and, for bitsandbytes, can store the weights otherwise than the pre-quantized checkpoint."""

FOUR_BIT_COMPUTE = "bfloat16"
"""What ``bnb_compute: config`` meant in every committed reference cell
(``settings.bnb_4bit_compute_dtype``, checked by the tests): a 4-bit row's ``config`` is
compared as this dtype."""

MEASURED = ("ok", "check_failed")
"""Statuses of a cell whose memory was measured through decode (``check_failed``: it ran, a
truth check about something else failed, e.g. the seed's quantization config not passed)."""

REFERENCE_DECODE = (32, 4)
"""Decode tokens and untimed warm-up steps every committed reference cell ran
(``settings.measurement``; checked by the tests): a run that decodes another number holds
another cache at its decode peak."""

_QUANT, _ON_LOAD = KEY.index("quant"), KEY.index("quantized_on_load")
_PHASES = ("load", "load_peak", "prefill", "decode")
_FOUR_BIT = FOUR_BIT_QUANTS | {"nf4-not-passed"}
"""Quant labels whose ``bnb_compute: config`` reads as the 4-bit compute dtype: the 4-bit
quantizations and ``nf4-not-passed`` (labelled nf4, its config never passed: grid.spec)."""


@dataclass
class Group:
    """The measured cells of one :data:`KEY` (``shapes``: (batch, seq) of each), and the
    shapes at which a cell of it ran out of memory (``oom``: shape -> folders)."""

    shapes: list[tuple[int, int]] = field(default_factory=list)
    worst: float = 0.0  # largest |ratio - 1| over phases and cells
    folders: set[str] = field(default_factory=set)
    oom: dict[tuple[int, int], set[str]] = field(default_factory=dict)

    def add(self, batch: int, seq: int, worst: float, folder: str) -> None:
        self.shapes.append((batch, seq))
        self.worst = max(self.worst, worst)
        self.folders.add(folder)

    def around(self, batch: int, seq: int) -> bool:
        """Whether measured cells enclose (batch, seq): one no larger in both, one no
        smaller in both."""
        below = any(b <= batch and s <= seq for b, s in self.shapes)
        return below and any(b >= batch and s >= seq for b, s in self.shapes)


def key_of(row: Mapping[str, Any], four_bit_compute: str = FOUR_BIT_COMPUTE) -> tuple[str, ...]:
    """A row's (or measured cell's) :data:`KEY` values as text, ``bnb_compute: config`` of a
    4-bit quantization read as ``four_bit_compute``."""
    values = {name: str(row.get(name) or "") for name in KEY}
    values["quantized_on_load"] = _quantized_on_load(row)
    if values["bnb_compute"] in ("config", "") and values["quant"] in _FOUR_BIT:
        values["bnb_compute"] = four_bit_compute
    return tuple(values[name] for name in KEY)


def _quantized_on_load(row: Mapping[str, Any]) -> str:
    """``yes``/``no`` for a quantized row (its ``quantized_on_load``, else from a measured
    cell's ``checkpoint_kind``, read as pre-quantized where a table has none: the H100-vs-H200
    comparison tables, which carry no measured/predicted ratios), ``""`` for an unquantized
    one."""
    quant = str(row.get("quant") or "")
    if quant not in QUANTIZED_QUANTS:
        return ""
    recorded = row.get("quantized_on_load")
    if recorded in (None, ""):
        prequantized = recorded_prequantized(row.get("checkpoint_kind") or None)
        on_load = quantizes_on_load(quant, prequantized=prequantized)
    else:
        on_load = recorded in (True, "yes")
    return "yes" if on_load else "no"


def _ratios(row: Mapping[str, str]) -> list[float] | None:
    """The measured/predicted ratios of a table row (after load, load peak, prefill, decode),
    or None where one is missing."""
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
    has all four ratios, from ``tables`` (cells.csv files; folders named relative to ``root``)."""
    groups: dict[tuple[str, ...], Group] = {}
    for path in tables:
        folder = path.parent.parent.relative_to(root).as_posix()
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("n_devices") not in (None, "", "1"):
                    continue  # a cell spread over GPUs: no one-device ratio
                shape = (int(row["batch"]), int(row["seq"]))
                if row.get("status") == "oom":
                    group = groups.setdefault(key_of(row), Group())
                    group.oom.setdefault(shape, set()).add(folder)
                ratios = _ratios(row) if row.get("status") in MEASURED else None
                if ratios is None:
                    continue
                group = groups.setdefault(key_of(row), Group())
                group.add(*shape, max(abs(r - 1) for r in ratios), folder)
    return {key: group for key, group in groups.items() if group.shapes or group.oom}


@functools.cache
def reference_groups(repo_root: Path) -> dict[tuple[str, ...], Group]:
    """:func:`measured_groups` of every committed reference (``results/reference``)."""
    reference = repo_root / "results" / "reference"
    return measured_groups(sorted(reference.rglob("tables/cells.csv")), reference)


def checked(
    row: Mapping[str, Any],
    groups: Mapping[tuple[str, ...], Group],
    four_bit_compute: str = FOUR_BIT_COMPUTE,
    decode: tuple[int, int] = REFERENCE_DECODE,
) -> tuple[str, str]:
    """(``yes`` | ``shape`` | ``no``, note) for one prediction row (module docstring);
    ``decode``: the run's (decode tokens, warm-up steps)."""
    key = key_of(row, four_bit_compute)
    group = groups.get(key)
    shape = (int(row["batch"]), int(row["seq"]))
    oom = ""
    if group is not None and shape in group.oom:
        oom = f"; this cell ran out of memory on {', '.join(sorted(group.oom[shape]))}"
    if group is None or not group.shapes:
        return "no", _never_measured(key, groups) + oom
    cells = len(group.shapes)
    seen = (
        f"{cells} measured cell{'s' if cells != 1 else ''} ({', '.join(sorted(group.folders))}), "
        f"worst {group.worst * 100:.2f} %"
    )
    if group.worst > CHECKED_WITHIN:
        return "no", f"{seen}: off by more than {CHECKED_WITHIN * 100:.0f} %{oom}"
    if tuple(decode) != REFERENCE_DECODE:
        return "shape", (
            f"{seen}, decoding {REFERENCE_DECODE[0]} tokens ({REFERENCE_DECODE[1]} warm-up); "
            f"this run decodes {decode[0]} ({decode[1]}){oom}"
        )
    if group.around(*shape):
        return "yes", seen + oom
    batches = [b for b, _ in group.shapes]
    seqs = [s for _, s in group.shapes]
    return "shape", (
        f"{seen}, none around batch {shape[0]} x {shape[1]} (measured batch {_span(batches)}, "
        f"sequence {_span(seqs)}){oom}"
    )


def _span(values: list[int]) -> str:
    """``1-16``, or ``8`` where every value is the same."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def _never_measured(key: tuple[str, ...], groups: Mapping[tuple[str, ...], Group]) -> str:
    """Which of ``key``'s settings no checked cell of its model had (all of them when the
    model itself was never checked), or the settings in which the closest checked ones differ."""
    same_model = [k for k, group in groups.items() if k[0] == key[0] and group.shapes]
    if not same_model:
        return f"model {key[0]} never measured with a prediction to compare"
    missing = [
        f"{name} {value}"
        for position, (name, value) in enumerate(zip(KEY, key, strict=True))
        if position and all(k[position] != value for k in same_model)
    ]
    if any(m.startswith("quant ") for m in missing):  # how it loads follows from the quant
        missing = [m for m in missing if not m.startswith("quantized_on_load ")]
    if missing:
        return f"{key[0]} never measured with {', '.join(missing)}"
    fewest = min(_differences(key, k) for k in same_model)
    closest = sorted(k for k in same_model if _differences(key, k) == fewest)
    differs = "; or ".join(
        ", ".join(
            f"{name} ({key[position]} here, {other[position]} there)"
            for position, name in enumerate(KEY)
            if position in _differing(key, other)
        )
        for other in closest
    )
    return (
        f"{key[0]}: each setting measured, never this combination; the closest differ in {differs}"
    )


def _differing(one: tuple[str, ...], other: tuple[str, ...]) -> list[int]:
    """Positions in :data:`KEY` where two keys differ; ``quantized_on_load`` not where the
    quantizations do (it follows from them)."""
    positions = [i for i, (a, b) in enumerate(zip(one, other, strict=True)) if a != b]
    if _QUANT in positions and _ON_LOAD in positions:
        positions.remove(_ON_LOAD)
    return positions


def _differences(one: tuple[str, ...], other: tuple[str, ...]) -> int:
    return len(_differing(one, other))
