"""Combinations known not to run, decided before any model is loaded.

Everything else is attempted and, if the libraries refuse, classified from the real exception
(see failures.py): the pipeline never guesses that something fails when it could try it.
"""

from __future__ import annotations

from llmbench.grid.spec import FOUR_BIT_QUANTS, Cell


def static_unsupported(cell: Cell, device: str) -> str | None:
    """Why a cell cannot run on ``device`` ("cuda" or "cpu"): every reason that applies,
    joined by "; ", or None to attempt it."""
    reasons = []
    if cell.attn == "flash_attention_2" and device != "cuda":
        reasons.append("flash-attn kernels run only on NVIDIA CUDA GPUs; this cell runs on the CPU")
    if cell.decode_mode == "graph" and device != "cuda":
        reasons.append("decode_mode graph captures a CUDA graph; this cell runs on the CPU")
    if cell.bnb_compute != "config" and cell.quant not in FOUR_BIT_QUANTS:
        reasons.append(
            f"bnb_compute {cell.bnb_compute} sets the compute dtype of bitsandbytes 4-bit "
            f"layers; quant {cell.quant} has none"
        )
    if cell.int8_threshold != "default" and cell.quant != "int8":
        reasons.append(
            f"int8_threshold {cell.int8_threshold} sets LLM.int8's outlier threshold; "
            f"quant {cell.quant} is not int8"
        )
    if cell.allocator != "default" and device != "cuda":
        reasons.append(
            f"allocator {cell.allocator} configures PyTorch's CUDA allocator; "
            "this cell runs on the CPU"
        )
    if cell.device_map != "config" and device != "cuda":
        reasons.append(
            f"device_map {cell.device_map} places the model over CUDA GPUs; "
            "this cell runs on the CPU"
        )
    if cell.max_memory != "none" and (device != "cuda" or cell.device_map == "single"):
        reasons.append(
            f"max_memory {cell.max_memory} caps what transformers' device_map planner puts on "
            "each GPU; "
            + ("this cell runs on the CPU" if device != "cuda" else "device_map single plans none")
        )
    return "; ".join(reasons) or None
