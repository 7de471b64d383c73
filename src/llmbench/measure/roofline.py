"""The device's own limits, measured: copy bandwidth and dense bf16 matmul rate.

Owns: ``Roofline`` and ``measure_roofline``. May import: nothing of llmbench.

Datasheet peaks (``efficiency.DEVICE_PEAKS``) are what a GPU is sold as; what a kernel can
reach on this device is lower. Decode reads every weight once per step, so its floor is
bytes ÷ the bandwidth a plain device-to-device copy reaches; MBU and MFU are reported against
both. Measured after the cell's memory record is complete (the matmul creates cuBLAS state and
the buffers pass through the caching allocator, which would otherwise shift the load and
prefill numbers); the buffers are freed and the cache emptied afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

COPY_BYTES = 2**30
"""Size of the copied buffer (1 GiB: far beyond the 50 MiB L2 of an H100/H200)."""
MATMUL_N = 8192
"""Square bf16 matmul size (n^3 multiply-adds, 2 FLOPs each)."""
REPEATS = 20


@dataclass(frozen=True)
class Roofline:
    """Best of ``REPEATS`` timed runs on one CUDA device (after one untimed run).

    ``copy_bandwidth_bytes_s`` counts the bytes read plus the bytes written by
    ``dst.copy_(src)`` (2 x COPY_BYTES per copy), as memory-bandwidth tests do.
    """

    device: str
    copy_bandwidth_bytes_s: float
    bf16_matmul_flops: float
    copy_bytes: int = COPY_BYTES
    matmul_n: int = MATMUL_N
    repeats: int = REPEATS
    method: str = (
        "best of 20 CUDA-event-timed runs: dst.copy_(src) of 1 GiB (read + write counted), "
        "torch.mm of two 8192x8192 bfloat16 matrices (2*n^3 FLOPs)"
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (bytes/s, FLOP/s)."""
        return asdict(self)


def _best_ms(torch: Any, function: Any) -> float:
    function()
    best = float("inf")
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        best = min(best, float(start.elapsed_time(end)))
    return best


def measure_roofline(torch: Any, device_index: int = 0) -> Roofline:
    """Measure copy bandwidth and bf16 matmul rate of ``cuda:device_index``.

    Needs about 1.4 GiB free on the device; raises torch.OutOfMemoryError otherwise (the
    caller records that the roofline could not be measured).
    """
    device = f"cuda:{device_index}"
    with torch.cuda.device(device_index):
        buffers = [torch.empty(COPY_BYTES, dtype=torch.uint8, device=device) for _ in "ab"]
        copy_ms = _best_ms(torch, lambda: buffers[1].copy_(buffers[0]))
        buffers = [
            torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=device) for _ in "ab"
        ]
        mm_ms = _best_ms(torch, lambda: torch.mm(buffers[0], buffers[1]))
        buffers.clear()
        torch.cuda.empty_cache()
    return Roofline(
        device=device,
        copy_bandwidth_bytes_s=2 * COPY_BYTES / (copy_ms / 1000.0),
        bf16_matmul_flops=2.0 * MATMUL_N**3 / (mm_ms / 1000.0),
    )
