"""torchao FP8 quantization: the config each fp8 cell asks for, and proof that it was applied.

``fp8`` quantizes every projection's weight on load to ``float8_e4m3fn`` with one float32
scale per output row (torchao 0.18 ``Float8WeightOnlyConfig``, PerRow by default) and
computes in the model dtype; ``fp8-dyn`` (``Float8DynamicActivationFloat8WeightConfig`` with
``PerRow``) also quantizes each activation row at run time and multiplies fp8 x fp8 through
``torch._scaled_mm``. Both go through transformers 5.17's ``TorchAoConfig`` from the bf16
checkpoint: no Hub access, no pre-quantized checkpoint.

The check reads the loaded model: each ``nn.Linear`` whose weight is a torchao
``Float8Tensor`` (its stored ``qdata`` float8_e4m3fn, ``scale`` float32 ``(out, 1)``), the
output embedding (lm_head) left in the model dtype (transformers' torchao quantizer leaves the
output embeddings out unless ``include_input_output_embeddings``), and, on CUDA, the aten ops
and GEMM kernels one small forward ran (:func:`profile_matmul`): fp8-dyn must run an fp8 x fp8
matmul (``aten::_scaled_mm``, or mslk's ``f8f8bf16_rowwise`` where that package is installed)
once per float8 layer; fp8 (weight-only) a model-dtype ``aten::mm`` and none of those.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from llmbench.grid.spec import TORCHAO_QUANTS

TORCHAO_VERSION = "0.18.0"
"""The torchao release these configs and the attribute names below were read from."""

FP8_MATMUL_OPS = ("aten::_scaled_mm", "mslk::f8f8bf16_rowwise")
"""Ops that multiply fp8 x fp8. torchao 0.18 ``_float8_addmm_impl`` (float8_tensor.py) runs
``torch.ops.mslk.f8f8bf16_rowwise`` when the mslk package is installed on SM >= 9.0 with
PerRow scales (KernelPreference.AUTO), else ``torch._scaled_mm``."""

EXPECTED_OPS = {"fp8": ("aten::mm",), "fp8-dyn": FP8_MATMUL_OPS}
"""Ops that must run at least once per float8 Linear in an fp8 cell's forward (calls summed
over the tuple): weight-only runs ``torch.matmul(x, weight.dequantize())`` (a model-dtype
GEMM, ``aten::mm``; lm_head's adds one more) and must run no fp8 x fp8 op; fp8-dyn must run
:data:`FP8_MATMUL_OPS`."""

OP_MARKERS = ("mm", "matmul", "linear", "f8f8")
"""Substrings of the operator names (``namespace::op``) recorded from the profile."""

GEMM_MARKERS = ("gemm", "cutlass", "sm90", "sm89", "xmma", "cublas", "matmul", "scaled_mm")
"""Substrings (lower case) of CUDA kernel names counted as matmul kernels."""


def torchao_missing_reason() -> str | None:
    """Why torchao cannot be used here (not installed), or None when it is importable."""
    if importlib.util.find_spec("torchao") is None:
        return (
            f"torchao is not installed (optional extra torchao=={TORCHAO_VERSION}: "
            "scripts/setup.sh installs requirements/extras.txt)"
        )
    return None


def build_torchao_config(quant: str) -> Any:
    """A transformers ``TorchAoConfig`` for ``fp8`` / ``fp8-dyn``, or None for other quants.

    Raises ImportError when torchao is missing (classified ``unavailable``)."""
    if quant not in TORCHAO_QUANTS:
        return None
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        PerRow,
    )
    from transformers import TorchAoConfig

    if quant == "fp8":
        quant_type: Any = Float8WeightOnlyConfig(granularity=PerRow())
    else:
        quant_type = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    return TorchAoConfig(quant_type=quant_type)


def _float8_weight(weight: Any) -> Any | None:
    """The torchao Float8Tensor behind a parameter, or None."""
    inner = getattr(weight, "data", weight)
    for candidate in (weight, inner):
        if type(candidate).__name__ == "Float8Tensor" and hasattr(candidate, "qdata"):
            return candidate
    return None


def inspect_fp8(model: Any) -> dict[str, Any]:
    """The model's Linear layers by what their weight stores: ``float8`` layers with the
    distinct ``qdata`` / ``scale`` dtypes and scale shapes (``(out, 1)`` per row), whether
    activation quantization is set, plain ``unquantized`` ones by name (lm_head expected),
    and the output embedding's dtype."""
    import torch

    float8 = 0
    qdata_dtypes: set[str] = set()
    scale_dtypes: set[str] = set()
    scale_per_row: set[bool] = set()
    act_quant: set[bool] = set()
    unquantized: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        tensor = _float8_weight(module.weight)
        if tensor is None:
            unquantized.append(name)
            continue
        float8 += 1
        qdata_dtypes.add(str(tensor.qdata.dtype).removeprefix("torch."))
        scale_dtypes.add(str(tensor.scale.dtype).removeprefix("torch."))
        out_features = tensor.qdata.shape[0]
        scale_per_row.add(tuple(tensor.scale.shape) == (out_features, 1))
        act_quant.add(getattr(tensor, "act_quant_kwargs", None) is not None)
    output = model.get_output_embeddings()
    output_weight = getattr(output, "weight", None)
    return {
        "linear_float8": float8,
        "linear_unquantized": unquantized,
        "qdata_dtypes": sorted(qdata_dtypes),
        "scale_dtypes": sorted(scale_dtypes),
        "scale_per_row": sorted(scale_per_row),
        "activation_quantized": sorted(act_quant),
        "lm_head_dtype": (
            str(output_weight.dtype).removeprefix("torch.")
            if output_weight is not None and _float8_weight(output_weight) is None
            else ("float8" if output_weight is not None else None)
        ),
    }


def profile_matmul(model: Any, input_ids: Any, torch: Any) -> dict[str, Any]:
    """Run one forward of ``input_ids`` (e.g. ``(1, 8)`` token ids) under torch.profiler and
    return the operators (:data:`OP_MARKERS`) and the CUDA GEMM kernels (:data:`GEMM_MARKERS`)
    that ran, as ``{"ops": {name: calls}, "gemm_kernels": [names]}`` (no kernels without
    CUDA). The first row's first 8 tokens of ``input_ids`` (batch, seq) are the input."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad(), profile(activities=activities) as prof:
        model(input_ids[:1, :8])
        if cuda:
            torch.cuda.synchronize()
    ops: dict[str, int] = {}
    kernels: set[str] = set()
    for event in prof.events():
        name = event.name
        device_type = str(getattr(event, "device_type", "")).lower()
        # kernels appear as device-side events and under the op that launched them
        launched = [kernel.name for kernel in getattr(event, "kernels", None) or []]
        for kernel in launched + ([name] if "cuda" in device_type else []):
            if any(marker in kernel.lower() for marker in GEMM_MARKERS):
                kernels.add(kernel)
        if "cuda" not in device_type and "::" in name and any(m in name for m in OP_MARKERS):
            ops[name] = ops.get(name, 0) + 1
    return {"ops": dict(sorted(ops.items())), "gemm_kernels": sorted(kernels)}


def check_fp8(
    quant: str, inspection: dict[str, Any], kernels: dict[str, Any] | None
) -> dict[str, Any]:
    """Compare an fp8 cell's request with the loaded model (:func:`inspect_fp8`) and the
    profiled matmul (:func:`profile_matmul`; None on the CPU, where it is not checked).

    Passes when at least one Linear stores float8_e4m3fn with float32 per-row scales,
    activation quantization is set exactly for fp8-dyn, lm_head stays in a float dtype, and
    :data:`EXPECTED_OPS` ran once per float8 Linear or more, with no fp8 x fp8 op in a
    weight-only cell. Returns ``{"requested", "config_passed", "applied", "passed", "reason",
    "fp8", "matmul"}``."""
    failed = []
    if not inspection["linear_float8"]:
        failed.append("no Linear holds a torchao Float8Tensor weight")
    if inspection["qdata_dtypes"] not in ([], ["float8_e4m3fn"]):
        failed.append(f"weights stored as {inspection['qdata_dtypes']}, not float8_e4m3fn")
    if inspection["scale_dtypes"] not in ([], ["float32"]) or False in inspection["scale_per_row"]:
        failed.append(
            f"scales {inspection['scale_dtypes']} per-row {inspection['scale_per_row']}, "
            "not float32 (out, 1)"
        )
    dynamic = quant == "fp8-dyn"
    if inspection["linear_float8"] and inspection["activation_quantized"] != [dynamic]:
        failed.append(f"activation quantization {inspection['activation_quantized']}")
    if inspection["lm_head_dtype"] in (None, "float8"):
        failed.append(f"lm_head is {inspection['lm_head_dtype']}, not kept unquantized")
    expected = EXPECTED_OPS[quant]
    ran: list[str] = []
    if kernels is not None:
        ran = [op for op in expected if op in kernels["ops"]]
        calls = sum(kernels["ops"].get(op, 0) for op in expected)
        if calls < inspection["linear_float8"]:
            failed.append(
                f"{calls} calls of {list(expected)} for {inspection['linear_float8']} float8 "
                f"Linear layers (ops {kernels['ops']})"
            )
        fp8_ops = [op for op in FP8_MATMUL_OPS if op in kernels["ops"]]
        if not dynamic and fp8_ops:
            failed.append(f"{fp8_ops} ran in a weight-only cell")
    applied = "none" if not inspection["linear_float8"] else quant
    passed = not failed
    if passed:
        profiled = f"; {', '.join(ran)} in the profiled forward" if kernels else ""
        reason = (
            f"{quant}: {inspection['linear_float8']} Linear layers hold float8_e4m3fn "
            f"weights, lm_head {inspection['lm_head_dtype']}{profiled}"
        )
    else:
        reason = f"requested {quant}: " + "; ".join(failed)
    return {
        "requested": quant,
        "config_passed": True,
        "applied": applied,
        "passed": passed,
        "reason": reason,
        "fp8": inspection,
        "matmul": {
            "expected_one_of": list(expected),
            "ran": ran,
            **(kernels or {"profiled": False}),
        },
    }
