"""Thin NVML access (the driver's view, what nvidia-smi shows); every call degrades to None.

CUDA device indices (as PyTorch numbers them under CUDA_VISIBLE_DEVICES) are mapped to NVML
handles by GPU UUID, so the numbers belong to the device the model is really on.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

try:
    import pynvml
    from pynvml import NVMLError
except ImportError:  # nvidia-ml-py is optional: CPU hosts and minimal installs.
    pynvml = None

    class NVMLError(Exception):  # type: ignore[no-redef]
        """Stands in for ``pynvml.NVMLError`` where nvidia-ml-py is absent (never raised)."""


_NVML_FAILURES = (NVMLError, AttributeError)
"""What an NVML call may raise: ``NVMLError`` (every NVML status, including a missing
``libnvidia-ml.so``, no driver, an uninitialised library, a function this driver lacks) and
``AttributeError`` (a wrapper this nvidia-ml-py version does not have)."""


@functools.cache
def available() -> bool:
    """True when NVML can be initialised (a driver is present)."""
    if pynvml is None:
        return False
    try:
        pynvml.nvmlInit()
    except NVMLError:  # no libnvidia-ml.so, no driver, or the driver refuses: no NVML here
        return False
    return True


def shutdown() -> None:
    """Release NVML in this process and forget that it was initialised, so that a process
    forked from this one initialises its own.

    NVML is not fork-safe: a child that inherits an initialised library could not list the
    devices (``nvmlDeviceGetCount``, ``nvmlSystemGetDriverVersion`` failed), so every cell
    forked from the warm-start server, which read the compute capability through NVML,
    recorded an empty ``gpu_before`` and ``gpu_clean.known: false`` (H200, 2026-12-04).
    """
    if pynvml is not None and available.cache_info().currsize and available():
        try:
            pynvml.nvmlShutdown()
        except NVMLError:  # already shut down: nothing to release
            pass
    available.cache_clear()


def _call(function: str, *args: Any) -> Any:
    if not available():
        return None
    try:
        return getattr(pynvml, function)(*args)
    except _NVML_FAILURES:  # the device, driver or library cannot answer: no number
        return None


def handle_for_uuid(uuid: str) -> Any:
    """NVML handle of the GPU with this UUID ("GPU-..."), or None."""
    return _call("nvmlDeviceGetHandleByUUID", uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")


def handle_for_cuda_index(index: int) -> Any:
    """NVML handle for a torch CUDA index, matched by UUID; falls back to the same index."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(index).uuid)
        handle = handle_for_uuid(uuid)
        if handle is not None:
            return handle
    # No torch; CUDA that cannot initialise (RuntimeError: no driver, a forked child; torch
    # raises AssertionError for a CPU-only build and an invalid index); a torch without
    # ``uuid`` (AttributeError). Then the index fallback below.
    except (ImportError, RuntimeError, AssertionError, AttributeError):
        pass
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return None  # The index would be ambiguous; better no number than a wrong one.
    return _call("nvmlDeviceGetHandleByIndex", index)


def device_used_bytes(handle: Any) -> int | None:
    """Memory in use on the whole device, all processes (nvidia-smi's "Memory-Usage")."""
    info = _call("nvmlDeviceGetMemoryInfo", handle) if handle is not None else None
    return int(info.used) if info is not None else None


def device_total_bytes(handle: Any) -> int | None:
    """Total memory of the device as the driver reports it."""
    info = _call("nvmlDeviceGetMemoryInfo", handle) if handle is not None else None
    return int(info.total) if info is not None else None


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a device, as NVML lists it."""

    pid: int
    used_bytes: int | None


def compute_processes(handle: Any) -> list[GpuProcess] | None:
    """Compute processes on the device, or None when NVML cannot list them."""
    if handle is None:
        return None
    processes = _call("nvmlDeviceGetComputeRunningProcesses", handle)
    if processes is None:
        return None
    return [
        GpuProcess(
            pid=int(p.pid), used_bytes=None if p.usedGpuMemory is None else int(p.usedGpuMemory)
        )
        for p in processes
    ]


def process_used_bytes(handle: Any, pid: int) -> int | None:
    """Device memory NVML attributes to ``pid`` (CUDA context included); None if not listed.

    Inside PID namespaces (containers) NVML may report host PIDs; then this is None and the
    device-wide figure is the one to read.
    """
    for process in compute_processes(handle) or []:
        if process.pid == pid:
            return process.used_bytes
    return None


def total_energy_mj(handle: Any) -> int | None:
    """Energy counter of the device since driver load, in millijoules (Volta and newer)."""
    value = _call("nvmlDeviceGetTotalEnergyConsumption", handle) if handle is not None else None
    return int(value) if value is not None else None


def driver_version() -> str | None:
    """NVIDIA driver version string."""
    value = _call("nvmlSystemGetDriverVersion")
    return value.decode() if isinstance(value, bytes) else value


def cuda_driver_version() -> str | None:
    """Highest CUDA version the driver supports, e.g. "13.0"."""
    value = _call("nvmlSystemGetCudaDriverVersion_v2")
    if value is None:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def power_limit_w(handle: Any) -> float | None:
    """Enforced power limit in watts."""
    value = _call("nvmlDeviceGetEnforcedPowerLimit", handle) if handle is not None else None
    return value / 1000.0 if value is not None else None


def clocks_mhz(handle: Any) -> dict[str, int | None]:
    """Current SM and memory clocks, and the maximum SM clock, in MHz."""
    if handle is None or pynvml is None:
        return {"sm": None, "memory": None, "sm_max": None}
    return {
        "sm": _call("nvmlDeviceGetClockInfo", handle, pynvml.NVML_CLOCK_SM),
        "memory": _call("nvmlDeviceGetClockInfo", handle, pynvml.NVML_CLOCK_MEM),
        "sm_max": _call("nvmlDeviceGetMaxClockInfo", handle, pynvml.NVML_CLOCK_SM),
    }


def device_count() -> int:
    """Number of GPUs NVML sees on the host (ignores CUDA_VISIBLE_DEVICES)."""
    value = _call("nvmlDeviceGetCount")
    return int(value) if value is not None else 0


def uuid_of(handle: Any) -> str | None:
    """UUID string of a device handle ("GPU-...")."""
    value = _call("nvmlDeviceGetUUID", handle) if handle is not None else None
    return value.decode() if isinstance(value, bytes) else value


def handles() -> list[Any]:
    """Handles of the host's GPUs in NVML's order (ignores CUDA_VISIBLE_DEVICES); empty
    without a driver; a device NVML cannot open is None."""
    return [_call("nvmlDeviceGetHandleByIndex", i) for i in range(device_count())]


def uuids() -> list[str]:
    """UUIDs ("GPU-...") of the host's GPUs in NVML's order (PCI bus order, which CUDA follows
    under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``); empty without a driver."""
    found = (uuid_of(handle) for handle in handles())
    return [uuid for uuid in found if uuid is not None]


def compute_capability(handle: Any) -> tuple[int, int] | None:
    """CUDA compute capability (major, minor) of a device, read without initialising CUDA."""
    value = _call("nvmlDeviceGetCudaComputeCapability", handle) if handle is not None else None
    return (int(value[0]), int(value[1])) if value is not None else None


def process_name(pid: int) -> str | None:
    """The command line of a process on this host (from /proc), or None when it is gone or
    in another PID namespace (a container's processes show under other numbers)."""
    try:
        raw = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:300] or None


def host_snapshot() -> dict[str, dict[str, Any]]:
    """Memory in use and compute processes of every GPU on the host, keyed by UUID.

    Taken by a cell before it initialises CUDA, so it shows what other processes hold.
    """
    snapshot: dict[str, dict[str, Any]] = {}
    for index in range(device_count()):
        handle = _call("nvmlDeviceGetHandleByIndex", index)
        uuid = uuid_of(handle)
        if uuid is None:
            continue
        processes = compute_processes(handle)
        snapshot[uuid] = {
            "nvml_index": index,
            "used_bytes": device_used_bytes(handle),
            "total_bytes": device_total_bytes(handle),
            "compute_processes": None
            if processes is None
            else [
                {"pid": p.pid, "used_bytes": p.used_bytes, "command": process_name(p.pid)}
                for p in processes
            ],
        }
    return snapshot
