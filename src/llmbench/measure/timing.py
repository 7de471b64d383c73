"""Latency: timers that respect asynchronous GPU work, and statistics that keep raw values."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``samples`` by linear interpolation between the two nearest
    ranks (numpy's default method), in the samples' unit. ``q`` in [0, 100] (not checked: one
    outside gives an extrapolated value or IndexError). Raises ValueError for no samples."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


TAIL_MIN_SAMPLES = {90: 10, 99: 100}
"""The fewest samples for which a tail percentile is reported: with fewer, the q-th
percentile is an interpolation between the two largest samples, not a tail (3 prefill
repeats would give a "p90" 80 % of the way from the second-largest to the largest)."""


def tail_percentile(samples: Sequence[float], q: int) -> float | None:
    """The ``q``-th percentile (90 or 99) of ``samples``, or None where there are fewer than
    ``TAIL_MIN_SAMPLES[q]`` of them (so None for no samples). Raises KeyError for a ``q`` that
    :data:`TAIL_MIN_SAMPLES` does not list."""
    return percentile(samples, q) if len(samples) >= TAIL_MIN_SAMPLES[q] else None


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings in milliseconds, with the raw samples kept beside it.
    ``p90``/``p99`` are None with fewer than 10/100 samples (``TAIL_MIN_SAMPLES``)."""

    unit: str
    count: int
    p50: float
    p90: float | None
    p99: float | None
    min: float
    max: float
    mean: float
    std: float
    raw: list[float]

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Statistics over ``samples_ms`` (milliseconds, kept as ``raw``): median, p90/p99
        (``tail_percentile``), min, max, mean, and the sample standard deviation (0 for one).
        Raises ValueError for no samples; a sample ``float()`` rejects raises what ``float()``
        raises (ValueError, TypeError)."""
        samples = [float(s) for s in samples_ms]
        if not samples:
            raise ValueError("no latency samples")
        return cls(
            unit="ms",
            count=len(samples),
            p50=percentile(samples, 50),
            p90=tail_percentile(samples, 90),
            p99=tail_percentile(samples, 99),
            min=min(samples),
            max=max(samples),
            mean=statistics.fmean(samples),
            std=statistics.stdev(samples) if len(samples) > 1 else 0.0,
            raw=samples,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


class Stopwatch:
    """Times a callable on the device it runs on.

    One CUDA device: CUDA events on the current stream. Several devices (a model split by
    device_map): every device synchronized before and after a host clock, since events on one
    device's stream do not wait for another's. CPU: the host clock.
    """

    def __init__(self, device_type: str, n_devices: int = 1) -> None:
        self.device_type = device_type
        self.n_devices = n_devices
        self._torch = None
        if device_type == "cuda":
            import torch

            self._torch = torch

    @property
    def method(self) -> str:
        """Name of the timing method, recorded in results."""
        if self._torch is None:
            return "perf_counter"
        return "cuda_events" if self.n_devices == 1 else "synchronized_perf_counter"

    def synchronize(self) -> None:
        """Wait for all queued work on every device."""
        if self._torch is not None:
            for index in range(self.n_devices):
                self._torch.cuda.synchronize(index)

    def time(self, function: Callable[[], T]) -> tuple[T, float]:
        """Run ``function`` once; return its result and its duration in milliseconds."""
        if self.method == "cuda_events":
            cuda = self._torch.cuda
            start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            start.record()
            result = function()
            end.record()
            end.synchronize()
            return result, float(start.elapsed_time(end))
        self.synchronize()
        begin = time.perf_counter()
        result = function()
        self.synchronize()
        return result, (time.perf_counter() - begin) * 1000.0
