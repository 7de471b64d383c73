"""Truth checks that need no model: was the GPU clean before the cell started?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

GPU_BUSY_THRESHOLD_BYTES = 2**30
"""Device memory in use before a cell above which the GPU is not called clean. An idle H100
already shows ~0.5 GiB used (driver reservations), so the bar sits above that."""


def _uuid_key(uuid: str | None) -> str:
    """NVML says "GPU-<uuid>", torch says "<uuid>": compare without the prefix."""
    return (uuid or "").removeprefix("GPU-").lower()


def gpu_clean_check(
    before: Mapping[str, Mapping[str, Any]] | None, gpus: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Were the GPUs this cell uses free of other compute processes and memory before it?
    ``passed``: True/False, or None where the snapshot missed a device (or there is none).

    ``before`` is the NVML snapshot taken before CUDA was initialised (keyed by NVML UUID),
    ``gpus`` the devices torch sees (with their UUIDs).
    """
    by_uuid = {_uuid_key(uuid): state for uuid, state in (before or {}).items()}
    devices = []
    for gpu in gpus:
        state = by_uuid.get(_uuid_key(gpu.get("uuid")))
        if state is None:
            devices.append({"device": gpu["device"], "known": False, "clean": None})
            continue
        processes = state.get("compute_processes")
        used = state.get("used_bytes")
        devices.append(
            {
                "device": gpu["device"],
                "known": True,
                "used_bytes_before": used,
                "other_compute_processes": processes,
                "clean": not processes and (used is None or used < GPU_BUSY_THRESHOLD_BYTES),
            }
        )
    known = bool(devices) and all(d["known"] for d in devices)
    return {
        # None (unknown) where NVML's snapshot missed a device: neither clean nor busy.
        "passed": all(d["clean"] is True for d in devices) if known else None,
        "threshold_bytes": GPU_BUSY_THRESHOLD_BYTES,
        "devices": devices,
    }
