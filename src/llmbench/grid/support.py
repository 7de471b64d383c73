"""Combinations known not to run, decided before any model is loaded.

Everything else is attempted and, if the libraries refuse, classified from the real exception
(see failures.py): the pipeline never guesses that something fails when it could try it.
"""

from __future__ import annotations

from llmbench.grid.spec import FOUR_BIT_QUANTS, Cell


def static_unsupported(cell: Cell, device: str) -> str | None:
    """Reason a cell cannot run on ``device`` ("cuda" or "cpu"), or None to attempt it."""
    if cell.attn == "flash_attention_2" and device != "cuda":
        return "flash-attn kernels run only on NVIDIA CUDA GPUs; this cell runs on the CPU"
    if cell.decode_mode == "graph" and device != "cuda":
        return "decode_mode graph captures a CUDA graph; this cell runs on the CPU"
    if cell.bnb_compute != "config" and cell.quant not in FOUR_BIT_QUANTS:
        return (
            f"bnb_compute {cell.bnb_compute} sets the compute dtype of bitsandbytes 4-bit "
            f"layers; quant {cell.quant} has none"
        )
    if cell.int8_threshold != "default" and cell.quant != "int8":
        return (
            f"int8_threshold {cell.int8_threshold} sets LLM.int8's outlier threshold; "
            f"quant {cell.quant} is not int8"
        )
    if cell.allocator != "default" and device != "cuda":
        return (
            f"allocator {cell.allocator} configures PyTorch's CUDA allocator; "
            "this cell runs on the CPU"
        )
    return None
