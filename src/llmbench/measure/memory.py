"""Memory tracking per device and per phase: allocator view, driver (NVML) view, host RSS.

Three views are kept apart because they answer different questions:
- allocated: bytes in live tensors (what the model needs);
- reserved: bytes the PyTorch caching allocator holds (what PyTorch took from the driver);
- NVML used: what nvidia-smi shows, CUDA context and other processes included.
Peaks are reset at the start of each phase, so each phase's peak is its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmbench import GIB
from llmbench.host import nvml
from llmbench.measure.failures import MemoryBudgetExceeded

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def host_rss_bytes() -> int | None:
    """Resident set size of this process now."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib * 1024


def host_peak_rss_bytes() -> int | None:
    """Peak resident set size since the last reset (VmHWM)."""
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_host_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class DeviceMemory:
    """One CUDA device at the end of one phase. Bytes; peaks are since the phase started."""

    device: str
    allocated_bytes: int
    reserved_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    nvml_device_used_bytes: int | None
    nvml_process_used_bytes: int | None


@dataclass
class HostMemory:
    """This process's host memory at the end of one phase."""

    rss_bytes: int | None
    peak_rss_bytes: int | None
    peak_is_phase_local: bool


class MemoryTracker:
    """Snapshots of every visible CUDA device (and the host) around named phases."""

    def __init__(self, device_type: str, budget_gib: float | None = None) -> None:
        self.device_type = device_type
        self.budget_bytes = None if budget_gib is None else int(budget_gib * GIB)
        self.phases: dict[str, dict[str, Any]] = {}
        self._torch = None
        self._indices: list[int] = []
        self._handles: list[Any] = []
        self._host_rss_before_load: int | None = host_rss_bytes()
        if device_type == "cuda":
            import torch

            self._torch = torch
            self._indices = list(range(torch.cuda.device_count()))
            self._handles = [nvml.handle_for_cuda_index(i) for i in self._indices]
            if self.budget_bytes is not None:
                for index in self._indices:
                    total = torch.cuda.get_device_properties(index).total_memory
                    torch.cuda.set_per_process_memory_fraction(
                        min(1.0, self.budget_bytes / total), index
                    )

    @property
    def devices(self) -> list[str]:
        """Names of the tracked CUDA devices ("cuda:0", ...)."""
        return [f"cuda:{i}" for i in self._indices]

    def mark_before_load(self) -> None:
        """Record host RSS before the model is loaded (the CPU budget is growth over it)."""
        self._host_rss_before_load = host_rss_bytes()

    def reset_peaks(self) -> bool:
        """Reset CUDA and host peaks; returns whether the host peak could be reset."""
        if self._torch is not None:
            for index in self._indices:
                self._torch.cuda.reset_peak_memory_stats(index)
        return reset_host_peak_rss()

    def synchronize(self) -> None:
        """Wait for queued device work so that peaks include it."""
        if self._torch is not None:
            for index in self._indices:
                self._torch.cuda.synchronize(index)

    def device_snapshot(self) -> list[DeviceMemory]:
        """Current and peak memory of every tracked CUDA device."""
        if self._torch is None:
            return []
        cuda = self._torch.cuda
        pid = os.getpid()
        return [
            DeviceMemory(
                device=f"cuda:{index}",
                allocated_bytes=cuda.memory_allocated(index),
                reserved_bytes=cuda.memory_reserved(index),
                peak_allocated_bytes=cuda.max_memory_allocated(index),
                peak_reserved_bytes=cuda.max_memory_reserved(index),
                nvml_device_used_bytes=nvml.device_used_bytes(handle),
                nvml_process_used_bytes=nvml.process_used_bytes(handle, pid),
            )
            for index, handle in zip(self._indices, self._handles, strict=True)
        ]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Track one phase: reset peaks, run the body, synchronize, record, check the budget.

        The record is kept even when the body raises, so a failed phase still shows how far
        memory got.
        """
        peak_is_local = self.reset_peaks()
        try:
            yield
        finally:
            try:
                self.synchronize()
            except Exception:  # A failed kernel can poison synchronize; keep the record anyway.
                pass
            self.phases[name] = {
                "devices": [asdict(d) for d in self.device_snapshot()],
                "host": asdict(HostMemory(host_rss_bytes(), host_peak_rss_bytes(), peak_is_local)),
            }
        self.check_host_budget(name)

    def check_host_budget(self, phase: str) -> None:
        """On CPU, raise MemoryBudgetExceeded when the phase's RSS peak outgrew the budget."""
        if self.device_type != "cpu" or self.budget_bytes is None:
            return
        peak = self.phases[phase]["host"]["peak_rss_bytes"]
        if peak is None or self._host_rss_before_load is None:
            return
        growth = peak - self._host_rss_before_load
        if growth > self.budget_bytes:
            raise MemoryBudgetExceeded(
                f"memory budget exceeded in {phase}: peak RSS grew by {growth / GIB:.3f} GiB "
                f"over the pre-load baseline, budget {self.budget_bytes / GIB:.3f} GiB "
                "(checked after the phase)"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: units, budget and per-phase records."""
        return {
            "unit": "bytes",
            "devices": self.devices,
            "budget_bytes": self.budget_bytes,
            "budget_enforcement": None
            if self.budget_bytes is None
            else (
                "torch.cuda.set_per_process_memory_fraction"
                if self.device_type == "cuda"
                else "peak RSS growth checked after each phase"
            ),
            "host_rss_before_load_bytes": self._host_rss_before_load,
            "phases": self.phases,
        }
