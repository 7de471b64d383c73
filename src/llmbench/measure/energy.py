"""Energy per phase from NVML's cumulative energy counter (millijoules since driver load)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from llmbench.host import nvml


@dataclass
class EnergyReading:
    """Energy drawn by the tracked devices over one measured region."""

    joules_per_device: list[float | None]
    seconds: float

    @property
    def joules(self) -> float | None:
        """Total over devices; None when any device has no counter."""
        values = self.joules_per_device
        if not values or any(v is None for v in values):
            return None
        return float(sum(values))


@dataclass
class EnergyMeter:
    """Reads the energy counter of each tracked device around a region.

    The counter covers the whole device (other processes too), which is why cells require a
    clean GPU; its update period is tens of milliseconds, so short regions are repeated.
    """

    handles: list[Any]
    readings: dict[str, EnergyReading] = field(default_factory=dict)

    @classmethod
    def for_cuda_devices(cls, n_devices: int) -> EnergyMeter:
        """Meter over CUDA devices 0..n-1 (empty on CPU)."""
        return cls([nvml.handle_for_cuda_index(i) for i in range(n_devices)])

    @contextmanager
    def measure(self, name: str, synchronize: Any) -> Iterator[None]:
        """Record the energy of the body under ``name``; ``synchronize`` waits for the device."""
        synchronize()
        before = [nvml.total_energy_mj(h) for h in self.handles]
        begin = time.perf_counter()
        yield
        synchronize()
        seconds = time.perf_counter() - begin
        after = [nvml.total_energy_mj(h) for h in self.handles]
        self.readings[name] = EnergyReading(
            joules_per_device=[
                None if b is None or a is None else (a - b) / 1000.0
                for b, a in zip(before, after, strict=True)
            ],
            seconds=seconds,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: joules per region, per device and total, with the region's duration."""
        return {
            "unit": "J",
            "source": "nvmlDeviceGetTotalEnergyConsumption" if self.handles else None,
            "regions": {
                name: {
                    "joules": reading.joules,
                    "joules_per_device": reading.joules_per_device,
                    "seconds": reading.seconds,
                    "mean_power_w": None
                    if reading.joules is None or reading.seconds <= 0
                    else reading.joules / reading.seconds,
                }
                for name, reading in self.readings.items()
            },
        }
