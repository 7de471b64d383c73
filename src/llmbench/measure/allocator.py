"""The CUDA caching allocator of the cell's process: its mode, checked; its trace, recorded.

Owns: ``allocator_check`` (did ``PYTORCH_CUDA_ALLOC_CONF`` take effect) and
``AllocatorTrace`` (``torch.cuda.memory._record_memory_history`` from before the load to the
end of the cell, dumped as a gzipped pickle of ``torch.cuda.memory._snapshot()``, the input of
the allocator simulator's tests). May import: ``llmbench.grid``.

The cell's mode is set by the runner in the child's environment (``run.child``), before CUDA
is initialised; ``ENV_VARIABLE`` names the variable. Tracing is a diagnostic switched on by
``TRACE_DIR_VARIABLE`` (a folder); it records every allocator event, which costs time, so its
cells' latencies are not comparable with untraced ones.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell

ENV_VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"
SETTINGS: dict[str, str | None] = {
    "default": None,
    "expandable_segments": "expandable_segments:True",
}
"""``PYTORCH_CUDA_ALLOC_CONF`` for each value of the allocator axis (None: unset)."""
TRACE_DIR_VARIABLE = "LLMBENCH_ALLOCATOR_TRACE_DIR"
TRACE_MAX_ENTRIES = 4_000_000
"""Ring-buffer size of the recorded history (events); a cell with more keeps the last ones."""


def allocator_check(torch: Any, cell: Cell) -> dict[str, Any]:
    """Whether the process's allocator runs in the cell's mode, from the environment it got
    and, where the snapshot says it (``segments[i]["is_expandable"]``), from its segments.

    Call after the load (there are segments then). Never raises.
    """
    expected = cell.allocator == "expandable_segments"
    record: dict[str, Any] = {
        "requested": cell.allocator,
        ENV_VARIABLE: os.environ.get(ENV_VARIABLE),
        "expandable_segments_observed": None,
    }
    try:
        segments = torch.cuda.memory._snapshot()["segments"]
    except Exception as exc:  # noqa: BLE001 - evidence, not a failure
        record["snapshot_error"] = f"{type(exc).__name__}: {exc}"
        segments = []
    flags = [s["is_expandable"] for s in segments if "is_expandable" in s]
    if flags:
        record["expandable_segments_observed"] = any(flags)
        record["passed"] = any(flags) == expected
    else:
        # Not observable from the snapshot: the environment is the evidence.
        record["passed"] = os.environ.get(ENV_VARIABLE) == SETTINGS[cell.allocator]
    if not record["passed"]:
        record["reason"] = (
            f"allocator {cell.allocator} requested, but {ENV_VARIABLE}="
            f"{os.environ.get(ENV_VARIABLE)!r} and expandable segments observed: "
            f"{record['expandable_segments_observed']}"
        )
    return record


class AllocatorTrace:
    """Record the allocator's history when ``TRACE_DIR_VARIABLE`` names a folder."""

    def __init__(self, torch: Any, cell: Cell) -> None:
        folder = os.environ.get(TRACE_DIR_VARIABLE)
        self.torch = torch
        self.path = (
            None
            if not folder
            else Path(folder)
            / (cell.relpath.removesuffix(".json").replace("/", "__") + ".pickle.gz")
        )
        self.free_before, self.total = None, None
        if self.path is not None:
            self.free_before, self.total = torch.cuda.mem_get_info()
            torch.cuda.memory._record_memory_history(
                enabled="all", context=None, stacks="python", max_entries=TRACE_MAX_ENTRIES
            )

    def dump(self) -> str | None:
        """Write the snapshot (with ``device_total_bytes`` and ``device_free_before_bytes``,
        from ``cudaMemGetInfo`` before the first allocation); return its path. Never raises."""
        if self.path is None:
            return None
        try:
            snapshot = self.torch.cuda.memory._snapshot()
            snapshot["llmbench"] = {
                "device_total_bytes": self.total,
                "device_free_before_bytes": self.free_before,
                ENV_VARIABLE: os.environ.get(ENV_VARIABLE),
                "max_memory_reserved": self.torch.cuda.max_memory_reserved(),
                "max_memory_allocated": self.torch.cuda.max_memory_allocated(),
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(self.path, "wb", compresslevel=6) as handle:
                pickle.dump(snapshot, handle)
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not fail the cell
            return f"not written: {type(exc).__name__}: {exc}"
        return str(self.path)
