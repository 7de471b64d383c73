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
    if cell.kv_cache != "model" and cell.decode_mode != "eager":
        reasons.append(
            f"kv_cache {cell.kv_cache} is transformers' QuantizedCache, grown per forward like "
            f"a DynamicCache; decode_mode {cell.decode_mode} decodes into a preallocated "
            "StaticCache"
        )
    if cell.allocator != "default" and device != "cuda":
        reasons.append(
            f"allocator {cell.allocator} configures PyTorch's CUDA allocator; "
            "this cell runs on the CPU"
        )
    return "; ".join(reasons) or None
