"""Combinations known not to run, decided before any model is loaded.

Everything else is attempted and, if the libraries refuse, classified from the real exception
(see failures.py): the pipeline never guesses that something fails when it could try it.
"""

from __future__ import annotations

from llmbench.grid.spec import FOUR_BIT_QUANTS, TORCHAO_QUANTS, Cell

FP8_MIN_CAPABILITY = (8, 9)
"""CUDA compute capability torchao's float8 kernels need (Ada 8.9, Hopper 9.0); torchao 0.18
asserts it in ``Float8DynamicActivationFloat8WeightConfig``'s transform."""


def positions_needed(cell: Cell, decode_tokens: int) -> int:
    """Positions a run of ``cell`` feeds the model, which a learned absolute position table
    (OPT's ``max_position_embeddings``) must hold: the prompt, then the ``decode_tokens - 1``
    generated tokens fed back (eager decode and ``generate``); a static or graph decode is
    given ``seq + decode_tokens`` (its StaticCache also holds warm-up and truth-check steps,
    rewound). The worker refuses a cell past the table with this count, ``predict`` too."""
    if cell.decode_mode == "eager":
        return cell.seq + max(decode_tokens - 1, 0)
    return cell.seq + decode_tokens


def static_unsupported(
    cell: Cell,
    device: str,
    capability: tuple[int, int] | None = None,
    device_map: str | None = None,
) -> str | None:
    """Why a cell cannot run on ``device`` ("cuda" or "cpu"): every reason that applies,
    joined by "; ", or None to attempt it. ``capability``: the CUDA compute capability
    (major, minor) of the cell's GPU, where known (fp8 needs >= 8.9). ``device_map``: the
    device_map the cell loads with (``Cell.device_map_policy`` of the config's key; None:
    the cell's own, ``auto`` at ``config``)."""
    reasons = []
    device_map = device_map or cell.device_map_policy("auto")
    if cell.quant in TORCHAO_QUANTS and device != "cuda":
        reasons.append(
            f"{cell.quant} runs torchao's float8 kernels, which need CUDA compute capability "
            ">= 8.9 (Ada/Hopper); this cell runs on the CPU"
        )
    elif cell.quant in TORCHAO_QUANTS and capability and tuple(capability) < FP8_MIN_CAPABILITY:
        reasons.append(
            f"{cell.quant} runs torchao's float8 kernels, which need CUDA compute capability "
            f">= 8.9 (Ada/Hopper); this GPU is {capability[0]}.{capability[1]}"
        )
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
    if cell.device_map != "config" and device != "cuda":
        reasons.append(
            f"device_map {cell.device_map} places the model over CUDA GPUs; "
            "this cell runs on the CPU"
        )
    if cell.max_memory != "none" and (device != "cuda" or device_map == "single"):
        # transformers' _get_device_map reads max_memory only for a device_map planned by name
        reasons.append(
            f"max_memory {cell.max_memory} caps what transformers' device_map planner puts on "
            "each GPU; "
            + ("this cell runs on the CPU" if device != "cuda" else "device_map single plans none")
            + (" (the config's)" if device == "cuda" and cell.device_map == "config" else "")
        )
    return "; ".join(reasons) or None
