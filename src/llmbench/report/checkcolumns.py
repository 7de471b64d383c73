"""The truth checks of a cell JSON (``checks``) as columns of cells.csv: quantization (what
was applied, and what the layers held for each load-time bitsandbytes setting the cell asked
for), attention, the GPU's cleanliness (before the cell, and NVML's memory outside the cell's
process during it), the decode truth check and the allocator.

May import ``llmbench.measure.checks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmbench.measure.checks import gpu_clean_check


def setting_found(setting: Mapping[str, Any] | None) -> str | None:
    """The values a load-time bitsandbytes setting's check (``checks.quantization.
    compute_dtype`` or ``.int8_threshold``) found in the layers, as text (``float32``,
    ``4.0``; joined by ``/`` when the layers disagree); None where the check did not apply
    or found no layer."""
    if not setting:
        return None
    return "/".join(str(v) for v in setting.get("found") or []) or None


def nvml_outside_process_mib(result: Mapping[str, Any]) -> float | None:
    """The most device memory NVML counted on a device of the cell that it did not attribute
    to the cell's own process, over every phase's reading, in MiB (2^20 B): the driver's own
    reservation (623.875 MiB on the H200 with driver 580.159.04, on every clean cell) plus
    whatever other processes held. None where no phase has both readings (no NVML, or NVML
    cannot see the process from inside a container)."""
    outside = [
        device["nvml_device_used_bytes"] - device["nvml_process_used_bytes"]
        for phase in ((result.get("memory") or {}).get("phases") or {}).values()
        for device in phase.get("devices") or []
        if device.get("nvml_device_used_bytes") is not None
        and device.get("nvml_process_used_bytes") is not None
    ]
    return max(outside) / 2**20 if outside else None


def check_columns(result: Mapping[str, Any]) -> dict[str, Any]:
    """One cell's check columns; None where a check is absent (a cell that failed before it,
    or one recorded before the check existed). Raises KeyError for a record with a
    ``gpu_clean`` check but no ``environment.gpus``."""
    checks = result.get("checks") or {}
    quant_check = checks.get("quantization") or {}
    attn_check = checks.get("attention") or {}
    # Recomputed from the raw NVML snapshot, so every table applies the current definition.
    clean = (
        gpu_clean_check(result.get("gpu_before"), (result.get("environment") or {})["gpus"])
        if "gpu_clean" in checks
        else None
    )
    return {
        "quant_applied": quant_check.get("applied"),
        "quant_check_passed": quant_check.get("passed"),
        # What the layers held, where the cell asked for a value (None elsewhere).
        "bnb_4bit_compute_dtype_found": setting_found(quant_check.get("compute_dtype")),
        "int8_threshold_found": setting_found(quant_check.get("int8_threshold")),
        "attn_in_config": attn_check.get("config_attn_implementation"),
        "attn_calls_per_forward": attn_check.get("calls_in_one_forward"),
        "attn_check_passed": attn_check.get("passed"),
        "flash_attn_version": (attn_check.get("flash_attn") or {}).get("version"),
        # The SDPA backend PyTorch picked (sdpa cells; forced ones name it in `attn`).
        "sdpa_backend_prefill": (attn_check.get("sdpa_backend_chosen") or {}).get("prefill"),
        "sdpa_backend_decode": (attn_check.get("sdpa_backend_chosen") or {}).get("decode"),
        # None (unknown) where the snapshot missed a device (``gpu_clean_check``): cells
        # forked from the warm-start server between ff05615 and its fix recorded none.
        "gpu_clean": None if clean is None else clean["passed"],
        "nvml_outside_process_max_mib": nvml_outside_process_mib(result),
        "decode_truth_passed": (checks.get("decode_truth") or {}).get("passed"),
        "decode_truth_max_rel_diff": (checks.get("decode_truth") or {}).get("max_rel_diff"),
        "allocator_check_passed": (checks.get("allocator") or {}).get("passed"),
    }
