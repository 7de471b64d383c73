"""A model checkpoint whose build failed: the manifest the build job leaves, and the cell JSON
of each of its cells (an ``error`` in phase ``load`` naming the build, its log and the command
that rebuilds it), so that one model that cannot be built costs only its own cells.

May import ``llmbench.grid``, ``llmbench.record``.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.record.cell import new_result, read_json

CHECKPOINT_MANIFEST = "checkpoint.json"
"""The manifest a model-building job leaves in a checkpoint folder (``llmbench.measure.models``
writes it on success; ``failed_build_manifest`` gives its form when the build failed)."""

BUILD_FAILED = "failed"
"""``status`` of a checkpoint manifest whose build raised."""


def failed_build_manifest(
    exc: BaseException, *, kind: str, source: str, log_path: str | None
) -> dict[str, Any]:
    """The manifest a model-building job writes instead of failing when its build raised:
    ``status: failed``, the exception, the file the build read (``source``: the architecture
    config or the base checkpoint) and the job's log. Cells of that model then end as ``error``
    cells (``run_cell``) and the rest of the run goes on."""
    return {
        "kind": kind,
        "status": BUILD_FAILED,
        "source": source,
        "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "error": f"{type(exc).__name__}: {exc}"[:2000],
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
        "log": log_path,
    }


def failed_build(checkpoint_dir: str | Path | None) -> tuple[Path, dict[str, Any]] | None:
    """(manifest path, manifest) when ``checkpoint_dir``'s build failed, else None (no folder
    given, no manifest yet, or a built checkpoint). An unreadable manifest counts as failed."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / CHECKPOINT_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except ValueError as exc:  # read_json names the file
        return path, {"status": BUILD_FAILED, "error": str(exc), "source": str(path)}
    if isinstance(manifest, dict) and manifest.get("status") == BUILD_FAILED:
        return path, manifest
    return None


def model_not_built(
    cell: Cell, settings: Mapping[str, Any], manifest_path: Path, manifest: Mapping[str, Any]
) -> dict[str, Any]:
    """The result of a cell whose model checkpoint could not be built: status ``error`` in
    phase ``load``, the build's exception as the error, its reason naming the file the build
    read, its log and the command that rebuilds it."""
    reason = (
        f"model checkpoint not built ({manifest.get('error') or 'no error recorded'}; "
        f"from {manifest.get('source') or '?'}; log {manifest.get('log') or '?'}); "
        f"after fixing the cause: snakemake -R {manifest_path}"
    )
    result = new_result(asdict(cell), settings)
    result.update(status="error", phase="load", reason=reason)
    result["error"] = {
        **unclassified_error("other_error", reason, manifest.get("traceback") or ""),
        "type": manifest.get("error_type"),
    }
    return result


def unclassified_error(category: str, message: str, log_tail: str) -> dict[str, Any]:
    """The ``error`` record of a cell whose worker gave no exception to classify; the end
    of its log stands in for the traceback."""
    return {
        "category": category,
        "type": None,
        "message": message,
        "requested_bytes": None,
        "traceback": log_tail,
    }
