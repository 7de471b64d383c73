"""What the warm-start server imports before it forks cells (``PRELOAD``), how (the import
must not initialise CUDA: :func:`preload`), and when a server must refuse to serve
(:func:`refusal_reason`). Imports torch only inside :func:`preload`; used by
:mod:`llmbench.run.warmstart`."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

PRELOAD: tuple[str, ...] = (
    "torch",
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.models.mistral.modeling_mistral",
    "transformers.models.llama.modeling_llama",
    "transformers.models.qwen2.modeling_qwen2",
    "transformers.generation.utils",
    "accelerate",
    "safetensors.torch",
    # bitsandbytes' import spends ~3 s here, most of it in torch's compiler stack; preloading
    # that stack leaves bitsandbytes itself (and its CUDA initialisation) to the child.
    "torch._dynamo",
    "torch._inductor.compile_fx",
    "llmbench.measure.worker",
)
"""Modules the server imports before forking (missing optional ones are skipped)."""


def nvml_capability() -> tuple[int, int] | None:
    """The CUDA compute capability (major, minor) that every GPU NVML sees shares, read
    without initialising CUDA (``host.nvml.compute_capability``); None when NVML is missing,
    sees no GPU, cannot read one, or the GPUs differ (then no child's device is known in
    advance). NVML is shut down again before it returns (``host.nvml.shutdown``)."""
    from llmbench.host import nvml

    try:
        capabilities = {nvml.compute_capability(handle) for handle in nvml.handles()}
    finally:
        nvml.shutdown()  # the server forks cells: none may inherit an initialised NVML
    if len(capabilities) != 1 or None in capabilities:
        return None
    return capabilities.pop()


def preload(
    modules: Sequence[str], capability: tuple[int, int] | None | bool = True
) -> dict[str, Any]:
    """Import ``modules``; return what was imported, what failed, how long it took, whether
    CUDA was initialised, and the compute capability answered in CUDA's place.

    Importing transformers imports torchao where it is installed (its quantizer module does,
    for the fp8 quants), and torchao asks ``torch.cuda.get_device_capability()`` at import
    (``torchao.utils.is_sm_at_least_100``), which initialises CUDA and so turned the warm
    start off on every GPU host with the extras (each cell then paid 12-20 s of imports on
    the H200, 2026-12-04). During the preload that question is answered from NVML instead
    (``capability``: True = :func:`nvml_capability`; a tuple = that answer; None/False =
    leave CUDA's own), which is the answer CUDA gives in every child when all GPUs share one
    capability; where they do not, CUDA's own answer is kept and the warm start stays off.
    The same import also reaches ``torch.utils._triton.has_triton()`` (torchao's mx_formats
    kernels, through transformers' safetensors conversion), which asks dynamo's
    ``CudaInterface.Worker.get_device_properties().major`` (``torch.cuda.current_device()``
    initialises CUDA; seen on the H200, 2026-12-04): dynamo's worker is answered with the
    same capability (``major``/``minor`` only) for the preload, and ``has_triton`` keeps the
    answer a child would compute.
    """
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    started = time.perf_counter()
    if capability is True:
        capability = nvml_capability()
    loaded, failed = [], {}
    with _capability_answered(capability or None):
        for name in modules:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception as exc:  # noqa: BLE001 - optional modules may be missing
                failed[name] = f"{type(exc).__name__}: {exc}"[:200]
    torch = sys.modules.get("torch")
    cuda_initialized = bool(torch is not None and torch.cuda.is_initialized())
    return {
        "loaded": loaded,
        "failed": failed,
        "seconds": time.perf_counter() - started,
        "cuda_initialized": cuda_initialized,
        "capability_from_nvml": list(capability) if capability else None,
    }


@contextlib.contextmanager
def _capability_answered(capability: tuple[int, int] | None) -> Iterator[None]:
    """While the block runs, ``torch.cuda.get_device_capability`` returns ``capability`` and
    dynamo's ``CudaInterface.Worker.get_device_properties`` an object with its ``major`` and
    ``minor`` (after importing torch for them); nothing changes when ``capability`` is None."""
    try:
        import torch.cuda
    except ImportError:  # the preload reports torch missing
        capability = None
    if capability is None:
        yield
        return
    from torch._dynamo.device_interface import CudaInterface

    major, minor = capability
    properties = types.SimpleNamespace(major=major, minor=minor)
    original = torch.cuda.get_device_capability
    original_properties = CudaInterface.Worker.get_device_properties
    torch.cuda.get_device_capability = lambda device=None: capability
    CudaInterface.Worker.get_device_properties = staticmethod(lambda device=None: properties)
    try:
        yield
    finally:
        torch.cuda.get_device_capability = original
        CudaInterface.Worker.get_device_properties = staticmethod(original_properties)


def refusal_reason(report: Mapping[str, Any]) -> str | None:
    """Why a server with this :func:`preload` report must not fork cells, or None."""
    if "torch" not in report["loaded"]:
        return "torch could not be imported"
    if report["cuda_initialized"]:
        return "CUDA was initialised by the preload (a forked child could not use the GPU)"
    return None
