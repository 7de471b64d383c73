"""The fit rule: allocator slack on top of the predicted peak, the device need, and the
yes / maybe / no verdict against a device's capacity.

Fit rule (``Prediction.fits``): the driver-level need = predicted peak allocated + allocator
slack + CUDA context must not exceed the device's capacity. The CUDA context is measured
(``CUDA_CONTEXT_BYTES``). The slack is the caching allocator's reserved-but-unallocated memory
at the peak (block rounding, split blocks, fragmentation); it grows with the transient
activations, so it is modelled as ``ALLOCATOR_SLACK_FRACTION`` of the peak's transient bytes
(everything but weights, workspace, inputs and KV cache) plus ``ALLOCATOR_SLACK_FIXED_BYTES``,
an envelope of the H100 reference cells (see the constants). It is deliberately conservative:
a cell predicted not to fit may still run when fragmentation is mild (eager cells typically
reserve only 0.4-0.6x their transients), one predicted to fit should.

Imports ``llmbench.predict.constants``.
"""

from __future__ import annotations

from llmbench.predict.constants import MIB

ALLOCATOR_SLACK_FRACTION = 1.0
"""Reserved - allocated at a prefill peak, per byte of the peak's transient bytes. In the H100
reference prefills ``peak_reserved - peak_allocated`` is 1.00-1.07x the transients for
sdpa/flash (bf16), 0.30-0.59x for eager, 0.08x for the fp32 math path and 0.42-2.05x for int8
(many differently sized temporaries). The OOM cell none/eager/b2/s8192 failed asking 16 GiB
with 15.9 GiB cached but fragmented, i.e. needed more than allocated + 0.4x transients. 1.0 is
the envelope: with the fixed part it bounds every reference prefill's peak reserved and
classifies all 46 reference cells right (tests/predict/test_predict_fit.py)."""

ALLOCATOR_SLACK_FIXED_BYTES = 768 * MIB
"""Fixed part of the slack, sized so that fraction x transients + fixed bounds the largest
reference excess (int8 eager, b1 s1024: 1365 MiB reserved-but-free over 656 MiB transients,
709 MiB beyond them; 89 single-GPU H100 reference cells)."""


def allocator_slack(transient: int) -> int:
    """Predicted reserved - allocated bytes at a peak whose transient bytes are ``transient``:
    ``ALLOCATOR_SLACK_FRACTION`` x transients + ``ALLOCATOR_SLACK_FIXED_BYTES``."""
    return int(ALLOCATOR_SLACK_FRACTION * transient) + ALLOCATOR_SLACK_FIXED_BYTES


def fit_verdict(
    *, peak_allocated: int, device_need: int, cuda_context: int, capacity_bytes: int
) -> str:
    """``yes``: fits with the allocator's slack; ``no``: the allocations alone (plus the
    CUDA context) exceed the device; ``maybe``: in between, where the caching allocator's
    fragmentation decides. On the H100 none/eager/b2/s8192 is such a cell: out of memory
    with 31.8 GiB reserved but unallocated, yet it ran at 56.7 GiB peak reserved with
    ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (results/reference/h100/
    diagnostics), while nf4/eager/b2/s8192 ran with the default allocator.

    All arguments in bytes: ``device_need`` = peak allocated + slack + CUDA context.
    """
    if device_need <= capacity_bytes:
        return "yes"
    if peak_allocated + cuda_context > capacity_bytes:
        return "no"
    return "maybe"
