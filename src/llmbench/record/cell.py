"""Cell result files: atomic writes, reads, and validation against the cell schema."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmbench.grid.schemas import SchemaError, validate_document
from llmbench.grid.spec import Cell
from llmbench.host import environment

CELL_SCHEMA = "cell.schema.json"
SCHEMA_VERSION = 1


def new_result(cell: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The skeleton of a cell result: status ``running`` in phase ``setup`` until the worker
    (or, for a worker that never reported, the parent) decides otherwise."""
    return {
        "schema_version": SCHEMA_VERSION,
        "cell": {**Cell.from_mapping(cell).to_dict(), "device": None},
        "settings": dict(settings),
        "status": "running",
        "phase": "setup",
        "reason": None,
        "error": None,
        "environment": environment.capture_host(),
        "gpu_before": None,
        "model": None,
        "checks": {},
        "memory": None,
        "latency": None,
        "energy": None,
        "efficiency": None,
        "timing_breakdown": {},
    }


def stamp_finished(result: MutableMapping[str, Any], *, now: datetime | None = None) -> None:
    """Set ``result["finished_at"]``: when the cell's record was finalized, UTC, ISO 8601 to the
    second (``2026-11-29T14:03:07Z``). The parent calls it once, as it writes the final JSON;
    ``now`` (an aware datetime) is for tests. Cells recorded before this field have none."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    result["finished_at"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf (invalid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def creation_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less this process's umask.

    ``tempfile.mkstemp`` creates its file 0o600 whatever the umask; a result renamed from it
    would be unreadable to anyone else on a cluster's shared filesystem. Read from
    /proc/self/status where Linux offers it (no race with other threads), else by setting and
    restoring the umask.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: Path | str, document: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one.

    The temp file lives in the target directory (same filesystem), is fsynced, then renamed;
    the file gets the mode the umask gives new files (:func:`creation_mode`), 0o644 by default.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, creation_mode())
        with os.fdopen(fd, "w") as handle:
            json.dump(_json_safe(document), handle, indent=2, sort_keys=False, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_json(path: Path | str) -> Any:
    """Read a JSON file, raising ValueError that names the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def validate_cell_result(document: Any, *, where: str) -> None:
    """Raise SchemaError naming ``where`` when a cell result violates the cell schema."""
    validate_document(document, CELL_SCHEMA, where=where)


def read_cell_result(path: Path | str) -> dict[str, Any]:
    """Read and validate one cell JSON; corrupt or schema-violating files raise, naming the file."""
    document = read_json(path)
    validate_cell_result(document, where=str(path))
    return document


def phase_record(result: Mapping[str, Any], phase: str) -> Mapping[str, Any] | None:
    """The memory record of ``phase`` (``memory.phases.<phase>``) of a cell result, or None."""
    memory = result.get("memory") or {}
    return (memory.get("phases") or {}).get(phase)


def summed_device_bytes(devices: Sequence[Mapping[str, Any]], key: str) -> int | None:
    """The sum over ``devices`` (a phase record's per-device dicts) of ``key`` (bytes); None
    when there is no device or one lacks the value (a partial sum would pass for the whole)."""
    values = [d.get(key) for d in devices]
    if not values or any(v is None for v in values):
        return None
    return int(sum(values))


__all__ = [
    "CELL_SCHEMA",
    "SCHEMA_VERSION",
    "SchemaError",
    "new_result",
    "phase_record",
    "read_cell_result",
    "read_json",
    "stamp_finished",
    "summed_device_bytes",
    "validate_cell_result",
    "write_json_atomic",
]
