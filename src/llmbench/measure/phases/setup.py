"""Set-up of a cell: the libraries it needs, the device it runs on, and its trackers.

Owns: ``Cancelled``, ``resolve_device``, ``import_libraries``, ``prepare_torch``,
``check_supported``, ``Session`` and ``open_session``. torch is imported only inside
``import_libraries`` (its import counts as the cell's start-up).
May import: ``llmbench.grid``, ``llmbench.host``, ``llmbench.measure`` trackers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import BNB_QUANTS, TORCHAO_QUANTS, Cell
from llmbench.grid.support import static_unsupported
from llmbench.host import environment
from llmbench.measure import fp8
from llmbench.measure.energy import EnergyMeter
from llmbench.measure.memory import MemoryTracker
from llmbench.measure.timing import Stopwatch


class Cancelled(Exception):
    """Raised to end a cell early with a chosen status (used for pre-flight decisions)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def resolve_device(requested: str, torch: Any) -> str:
    """The device a cell runs on: cuda, cpu, or for ``auto`` cuda when one is visible.

    Raises RuntimeError when ``cuda`` is requested and none is usable.
    """
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested, but this node has no usable CUDA GPU")
    return requested


def import_libraries(quant: str) -> Any:
    """Import torch and transformers (and bitsandbytes for a bitsandbytes quant); returns torch.

    A missing bitsandbytes is not raised here: it is classified when from_pretrained asks
    for it.
    """
    import torch
    from transformers import AutoModelForCausalLM  # noqa: F401 - its import counts as start-up

    if quant in BNB_QUANTS:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            pass  # classified when from_pretrained asks for it
    return torch


def prepare_torch(torch: Any, device: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the CPU thread count (``settings["threads"]``), then return torch's view of the
    environment (``environment.capture_torch``: CUDA runtime, GPUs, threads)."""
    if device == "cpu" and settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    return environment.capture_torch()


def check_supported(
    cell: Cell, device: str, torch: Any = None, configured_device_map: str = "auto"
) -> None:
    """Raise Cancelled("unsupported", reason) for a cell known not to run on ``device`` (on
    CUDA ``torch`` gives the GPU's compute capability; ``configured_device_map``: the
    config's ``device_map``), then Cancelled("unavailable", reason) for an fp8 cell without torchao
    (an optional extra)."""
    capability = None
    if torch is not None and device == "cuda" and cell.quant in TORCHAO_QUANTS:
        capability = tuple(torch.cuda.get_device_capability(0))
    reason = static_unsupported(
        cell, device, capability, cell.device_map_policy(configured_device_map)
    )
    if reason:
        raise Cancelled("unsupported", reason)
    if cell.quant in TORCHAO_QUANTS:
        missing = fp8.torchao_missing_reason()
        if missing:
            raise Cancelled("unavailable", missing)


@dataclass(frozen=True)
class Session:
    """What every later phase measures with: the device, its GPUs and the trackers."""

    torch: Any
    device: str
    """``cuda`` or ``cpu``."""
    gpus: list[dict[str, Any]]
    """The GPUs torch sees, as recorded under ``environment.gpus``."""
    n_devices: int
    """CUDA devices the cell uses (0 on the CPU)."""
    tracker: MemoryTracker
    stopwatch: Stopwatch
    energy: EnergyMeter


def open_session(
    torch: Any, device: str, gpus: list[dict[str, Any]], budget_gib: float | None
) -> Session:
    """Start the trackers: memory (with the budget in GiB, if any), latency and energy.

    On CUDA the budget is applied to the allocator here, before anything is loaded.
    """
    n_devices = len(gpus) if device == "cuda" else 0
    tracker = MemoryTracker(device, budget_gib)
    stopwatch = Stopwatch(device, max(n_devices, 1))
    energy = EnergyMeter.for_cuda_devices(n_devices)
    return Session(torch, device, gpus, n_devices, tracker, stopwatch, energy)
