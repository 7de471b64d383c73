"""The tracer against measured cells: for every ``ok`` one-GPU cell JSON under the given
folders, traced vs measured peak allocated bytes of load, prefill and decode.

``python -m llmbench.predict.trace.check [FOLDER ...]`` prints the worst cells first
(default: the committed one-GPU references, ``REFERENCE_FOLDERS``). A cell whose quantization
or model the tracer refuses is listed with the reason instead of an error; a file that cannot
be read as JSON is listed as unreadable, with the error.

Imports ``llmbench`` (REPO_ROOT), ``llmbench.grid.spec.Cell``, ``llmbench.predict.constants``
and ``llmbench.predict.trace`` (phases, model).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench import REPO_ROOT
from llmbench.grid.spec import Cell
from llmbench.predict.constants import DECODE_WARMUP_TOKENS
from llmbench.predict.trace.model import Untraceable
from llmbench.predict.trace.phases import TracedPeaks, trace_cell

REFERENCE_FOLDERS = tuple(
    f"results/reference/{run}"
    for run in (
        "h100/seed",
        "h100/extended",
        "h100/frontier",
        "h100/diagnostics",
        "h200/seed",
        "h200/extended",
    )
)
"""The committed references measured on one GPU (``h100/seed-2gpu`` spreads over two)."""

PHASES = ("load", "prefill", "decode")


@dataclass(frozen=True)
class Comparison:
    """One cell: measured and traced peak allocated bytes per phase (None: not traced)."""

    path: str
    cell: Cell
    measured: dict[str, int]
    traced: dict[str, int] | None
    reason: str | None = None

    def error(self, phase: str) -> float | None:
        """traced / measured - 1 for ``phase`` (None when not traced)."""
        if self.traced is None:
            return None
        return self.traced[phase] / self.measured[phase] - 1

    def worst(self) -> float:
        """The largest |error| over the phases (0 when not traced)."""
        errors = [abs(e) for p in PHASES if (e := self.error(p)) is not None]
        return max(errors, default=0.0)


def ok_one_gpu_cells(
    folders: Iterable[Path], unreadable: list[str] | None = None
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, cell JSON) of every ``ok`` cell measured on one device under ``folders``. A file
    that cannot be read or is not JSON is skipped and, when ``unreadable`` is given, appended
    to it as ``"<path>: <error>"``."""
    for folder in folders:
        for path in sorted(folder.rglob("*.json")):
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                if unreadable is not None:
                    unreadable.append(f"{_display(path)}: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(result, dict) or result.get("status") != "ok":
                continue
            phases = (result.get("memory") or {}).get("phases") or {}
            if all(len((phases.get(p) or {}).get("devices") or []) == 1 for p in PHASES):
                yield path, result


def _model_config(model: str) -> dict[str, Any]:
    return json.loads((REPO_ROOT / "config" / "models" / f"{model}.json").read_text())


def _display(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def compare(folders: Iterable[Path], unreadable: list[str] | None = None) -> list[Comparison]:
    """Trace every ok one-GPU cell under ``folders`` (each distinct cell once); files that
    cannot be read are appended to ``unreadable`` (``ok_one_gpu_cells``)."""
    traced: dict[tuple[Any, ...], TracedPeaks | str] = {}
    rows = []
    for path, result in ok_one_gpu_cells(folders, unreadable):
        cell = Cell.from_mapping(result["cell"])
        settings = result["settings"]
        measurement = settings["measurement"]
        key = (
            cell,
            measurement["decode_tokens"],
            settings["bnb_4bit_compute_dtype"],
            measurement.get("decode_warmup_tokens", DECODE_WARMUP_TOKENS),
        )
        if key not in traced:
            try:
                traced[key] = trace_cell(
                    _model_config(cell.model),
                    cell,
                    decode_tokens=key[1],
                    bnb_4bit_compute_dtype=key[2],
                    decode_warmup_tokens=key[3],
                )
            except Untraceable as exc:
                traced[key] = str(exc)
        peaks = traced[key]
        phases = result["memory"]["phases"]
        measured = {p: phases[p]["devices"][0]["peak_allocated_bytes"] for p in PHASES}
        rel = _display(path)
        if isinstance(peaks, str):
            rows.append(Comparison(rel, cell, measured, None, peaks))
        else:
            values = {p: getattr(peaks, p) for p in PHASES}
            rows.append(Comparison(rel, cell, measured, values))
    return rows


def report(rows: list[Comparison], worst: int = 15, unreadable: Iterable[str] = ()) -> str:
    """Text: the files that could not be read (``unreadable``), per quantization the traced
    count and the largest |error|, then the worst cells."""
    lines = [f"unreadable, skipped: {entry}" for entry in unreadable]
    for quant in sorted({r.cell.quant for r in rows}):
        mine = [r for r in rows if r.cell.quant == quant]
        done = [r for r in mine if r.traced is not None]
        top = max((r.worst() for r in done), default=0.0)
        lines.append(f"{quant}: {len(done)}/{len(mine)} ok cells traced, worst {top:.4%}")
        lines.extend(sorted({f"  not traced: {r.reason}" for r in mine if r.traced is None}))
    done = sorted((r for r in rows if r.traced is not None), key=Comparison.worst, reverse=True)
    for r in done[:worst]:
        errors = " ".join(f"{p} {r.error(p):+.4%}" for p in PHASES)
        lines.append(f"{r.worst():.4%}  {errors}  {r.path}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the comparison for the folders in ``argv`` (default: ``REFERENCE_FOLDERS``)."""
    folders = [REPO_ROOT / f for f in (argv or REFERENCE_FOLDERS)]
    unreadable: list[str] = []
    rows = compare(folders, unreadable)
    print(report(rows, unreadable=unreadable))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
