"""The cell spec the runner writes for its worker, as a typed value.

Owns: ``CellSpec``. May import: ``llmbench.grid``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell


@dataclass(frozen=True)
class CellSpec:
    """What one cell's worker is asked to measure, and where it reports.

    ``settings`` and ``measurement`` stay mappings: each phase reads the keys it needs when it
    needs them, so a spec that lacks one fails in the phase that uses it.
    """

    cell: Cell
    settings: Mapping[str, Any]
    measurement: Mapping[str, Any]
    model_entry: Mapping[str, Any] | None
    """The grid's entry for the model (``pretrained`` or an architecture); None when absent."""
    base_dir: Path | None
    prequantized_dir: Path | None
    partial_path: str
    """Where the worker writes its result after every phase."""
    spawned_at: float
    """time.time() (s since the epoch) when the parent spawned the worker."""

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> CellSpec:
        """Read a spec as ``llmbench.run.runner.run_cell`` writes it.

        ``spawned_at`` defaults to now. Raises KeyError for a spec without ``cell``,
        ``settings``, ``settings["measurement"]`` or ``partial_path``, and ValueError for an
        invalid cell (``Cell.from_mapping``). A missing ``model_entry`` is None here; the load
        phase raises the KeyError when it needs it.
        """
        spawned_at = float(spec.get("spawned_at") or time.time())
        settings = spec["settings"]
        measurement = settings["measurement"]
        cell = Cell.from_mapping(spec["cell"])
        return cls(
            cell=cell,
            settings=settings,
            measurement=measurement,
            model_entry=spec.get("model_entry"),
            base_dir=_optional_path(spec.get("base_dir")),
            prequantized_dir=_optional_path(spec.get("prequantized_dir")),
            partial_path=spec["partial_path"],
            spawned_at=spawned_at,
        )


def _optional_path(value: Any) -> Path | None:
    return None if value is None else Path(value)
