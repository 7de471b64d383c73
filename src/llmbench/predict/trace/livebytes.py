"""Live device bytes of a traced program: a ``TorchDispatchMode`` that sees every ATen op's
outputs, counts each new tensor storage once (rounded up to the CUDA caching allocator's
512-byte block, ``ALLOCATOR_GRANULE``) and subtracts it when Python frees the storage.

The design follows ``torch.distributed._tools.mem_tracker.MemTracker`` (PyTorch 2.13): a
weak reference with a finalizer per ``UntypedStorage``, its bytes rounded like
``_WeakRefInfo._calculate_mem_consumed`` does for CUDA, and the peak updated after every op.
Only what the peak of ``torch.cuda.max_memory_allocated`` needs is kept: the running total,
its maximum since the last ``reset_peak``, and a name for the op at which it was reached.

Bytes a CUDA kernel allocates internally (not through an ATen op the mode sees), such as the
cuBLAS workspace, are not seen: the caller adds them (``llmbench.predict.constants``).

Imports torch and ``llmbench.predict.constants``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from llmbench.predict.constants import granule


def _decomposition_key(func: Any) -> Any:
    """The composite kernel a GPU runs for an ATen op, or None (the op has its own kernel).

    CompositeImplicitAutograd ops always decompose. CompositeExplicitAutograd ops decompose
    on a device without a kernel of their own; a CPU kernel stands for one (CUDA kernels are
    absent from a CPU build): e.g. ``_safe_softmax`` (SDPA math) runs its C++ composite on
    CUDA, whose ``softmax``, ``eq`` and ``where`` temporaries the ``meta`` kernel hides.
    """
    if func not in _KEYS:
        has = torch._C._dispatch_has_kernel_for_dispatch_key
        name = func.name()
        key = None
        if has(name, "CompositeImplicitAutograd"):
            key = torch._C.DispatchKey.CompositeImplicitAutograd
        elif (
            has(name, "CompositeExplicitAutograd")
            and not has(name, "CPU")
            and name not in CUDA_ONLY_KERNELS
        ):
            key = torch._C.DispatchKey.CompositeExplicitAutograd
        _KEYS[func] = key
    return _KEYS[func]


_KEYS: dict[Any, Any] = {}

CUDA_ONLY_KERNELS = frozenset({"aten::_grouped_mm"})
"""CompositeExplicitAutograd ops that have a CUDA kernel but no CPU one (PyTorch 2.13
``native_functions.yaml``): ``_grouped_mm`` (mixture-of-experts layers) runs one CUDA kernel
into one output; its composite fallback loops over the data-dependent group offsets."""


class LiveBytes(TorchDispatchMode):
    """Running total of live device storage bytes (allocator-rounded) and its peak.

    ``live``: bytes of tracked storages alive now; ``peak``: the largest ``live`` seen since
    the last ``reset_peak``; ``peak_at``: the op (``aten.<name>``) after which it was reached.
    Storages on ``device_type`` only (default ``cuda``); others (CPU scalars) are ignored.
    ``overrides``: ops whose GPU kernel allocates what the meta kernel cannot show, each
    mapped to a function making those allocations (run with the mode on).
    """

    def __init__(
        self, device_type: str = "cuda", overrides: Mapping[Any, Callable[..., Any]] | None = None
    ) -> None:
        super().__init__()
        self.device_type = device_type
        self.overrides = dict(overrides or {})
        self.live = 0
        self.peak = 0
        self.peak_at = "start"
        self._refs: dict[int, weakref.ref] = {}

    def new_storage(self, tensor: Any) -> tuple[int, Any, int] | None:
        """``(key, storage, allocator-rounded bytes)`` of ``tensor``'s storage on
        ``device_type`` if this mode does not count it yet, else None."""
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != self.device_type:
            return None
        storage = tensor.untyped_storage()
        key = id(storage)
        known = self._refs.get(key)
        if known is not None and known() is storage:
            return None
        return key, storage, granule(storage.nbytes())

    def track(self, tensor: torch.Tensor, where: str = "track") -> None:
        """Count ``tensor``'s storage if it is new (parameters made before the mode, inputs),
        and update the peak."""
        new = self.new_storage(tensor)
        if new is None:
            return
        key, storage, nbytes = new
        self._refs[key] = weakref.ref(storage, self._freed(key, nbytes))
        self.live += nbytes
        self._update_peak(where)

    def _freed(self, key: int, nbytes: int) -> Any:
        def callback(ref: weakref.ref) -> None:
            if self._refs.get(key) is ref:
                del self._refs[key]
            self.live -= nbytes

        return callback

    def _update_peak(self, where: str) -> None:
        if self.live > self.peak:
            self.peak = self.live
            self.peak_at = where

    def reset_peak(self) -> None:
        """Start a new phase: the peak becomes the bytes alive now (``reset_peak_memory_stats``)."""
        self.peak = self.live
        self.peak_at = "start"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        override = self.overrides.get(func)
        if override is not None:  # an opaque GPU kernel, replaced by its allocations
            with self:
                return override(*args, **kwargs)
        key = _decomposition_key(func)
        if key is not None:
            # Under inference_mode the mode sees composite ops whole (e.g. ``softmax.int``);
            # their C++ decomposition is what a GPU runs, so run it with the mode on again
            # (not ``func.decompose``: it prefers Python decompositions, e.g. ``dropout``'s
            # clone where ATen returns its input).
            with self:
                return func._op_dk(key, *args, **kwargs)
        out = func(*args, **kwargs)
        where = f"aten.{func.__name__}"
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self.track(tensor, where)
        return out
