"""Reference runs on disk: copy a run's cell JSONs (and Snakemake's job benchmarks) into a
reference folder (``publish``), or a reference's cells back into a run folder so that a run
measures only the rest (``resume``). Imports nothing from llmbench (cells come in as
``Cell``-like objects with a ``relpath``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _copy_cells(source: Path, target: Path, cells: Iterable[Any], *, resume: bool) -> int:
    """Copy the cells' JSONs (and job benchmarks) from ``source`` to ``target``; with
    ``resume``, only where ``target`` lacks them, dated now. Returns the cells copied."""
    copied = 0
    for cell in cells:
        if resume and (target / "cells" / cell.relpath).exists():
            continue  # this run's own cell (and its benchmark) stays
        for folder, suffix in (("cells", ".json"), ("benchmarks/cells", ".tsv")):
            origin = source / folder / cell.relpath.replace(".json", suffix)
            if origin.is_file():
                _copy(origin, target / folder / cell.relpath.replace(".json", suffix), touch=resume)
                copied += folder == "cells"
    return copied


def _copy(origin: Path, destination: Path, *, touch: bool) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(origin, destination)
    if touch:  # newer than the checkpoints: Snakemake keeps the cell
        os.utime(destination)


def publish(source: Path, target: Path, cells: Iterable[Any]) -> int:
    """Copy ``cells``' JSONs (and job benchmarks) from ``source`` to ``target``, replacing
    what is there. Returns the cells copied."""
    return _copy_cells(source, target, cells, resume=False)


def resume(
    reference: Path, target: Path, cells: Iterable[Any], frontier: bool = False
) -> tuple[int, int]:
    """Copy a reference run's ``cells`` (and with ``frontier`` its frontier probes and
    searches) into ``target`` where missing, dated now. Returns (cells, frontier files)."""
    copied = _copy_cells(reference, target, cells, resume=True)
    files = 0
    if frontier:
        for origin in sorted((reference / "frontier").rglob("*.json")):
            destination = target / "frontier" / origin.relative_to(reference / "frontier")
            if not destination.exists():
                _copy(origin, destination, touch=True)
                files += 1
    return copied, files
