"""llmbench.predict.trace.cuda: the SDPA backend CUDA PyTorch takes, and the patches that make
meta tensors run it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from llmbench.predict.trace.cuda import cuda_semantics, sdpa_backend  # noqa: E402
from llmbench.predict.trace.livebytes import LiveBytes  # noqa: E402


def qkv(dtype=torch.bfloat16, heads=32, kv_heads=8, q_len=64, kv_len=64, head_dim=128):
    q = torch.empty(2, heads, q_len, head_dim, dtype=dtype, device="meta")
    k = torch.empty(2, kv_heads, kv_len, head_dim, dtype=dtype, device="meta")
    return q, k, torch.empty_like(k)


@pytest.mark.parametrize(
    ("dtype", "kv_heads", "mask", "head_dim", "expected"),
    [
        (torch.bfloat16, 8, False, 128, "flash"),  # GQA: flash takes it
        (torch.float16, 32, False, 256, "flash"),
        (torch.bfloat16, 32, True, 128, "efficient"),  # a mask: not flash
        (torch.float32, 32, False, 128, "efficient"),  # float32: not flash
        (torch.float32, 8, False, 128, "math"),  # float32 + GQA (the H100 fp32 cell)
        (torch.bfloat16, 32, False, 512, "math"),  # head_dim > 256
    ],
)
def test_backend_choice(dtype, kv_heads, mask, head_dim, expected):
    q, k, _ = qkv(dtype, kv_heads=kv_heads, head_dim=head_dim)
    attn_mask = torch.empty(2, 1, 64, 64, dtype=dtype, device="meta") if mask else None
    assert sdpa_backend(q, k, attn_mask, enable_gqa=kv_heads != 32) == expected


def test_forced_backend_wins_and_unknown_is_refused():
    q, k, _ = qkv()
    assert sdpa_backend(q, k, None, True, forced="math") == "math"
    with pytest.raises(ValueError, match="unknown SDPA backend"):
        sdpa_backend(q, k, None, True, forced="turbo")


def test_patched_sdpa_allocates_what_the_kernel_does_and_is_restored():
    """flash: the output and a float32 logsumexp, no scores; math: float32 scores."""
    original = F.scaled_dot_product_attention
    q, k, v = qkv(q_len=1024, kv_len=1024)
    sizes = {}
    for forced in ("flash", "math"):
        live = LiveBytes("meta")
        with live, torch.inference_mode(), cuda_semantics(forced) as choices:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        assert out.shape == q.shape
        assert choices.sdpa == {1024: {forced}}
        sizes[forced] = live.peak
    # + 2 x 512: meta's philox seed and offset (CUDA keeps them on the host without dropout)
    assert sizes["flash"] == 2 * 32 * 1024 * 128 * 2 + 2 * 32 * 1024 * 4 + 2 * 512
    assert sizes["math"] > 2 * 32 * 1024 * 1024 * 4  # the float32 scores
    assert F.scaled_dot_product_attention is original


def test_float16_softmax_to_float32_makes_no_copy_on_cuda():
    """ATen SoftMax.cpp: a CUDA float16 input with dtype=float32 runs _softmax(half_to_float)."""
    n = 1 << 20
    for dtype, expected in ((torch.float16, 2 * n + 4 * n), (torch.bfloat16, 2 * n + 8 * n)):
        x = torch.empty(n, dtype=dtype, device="meta")
        live = LiveBytes("meta")
        live.track(x)
        with live, torch.inference_mode(), cuda_semantics():
            y = F.softmax(x, dim=-1, dtype=torch.float32)
        assert y.dtype == torch.float32
        assert live.peak == expected, dtype


def test_boolean_mask_becomes_additive_in_the_query_dtype_before_a_fused_kernel():
    """PyTorch attention.cpp convert_boolean_attn_mask: a (b, 1, q, kv) bool mask becomes a
    query-dtype tensor of the same shape, alive during the kernel (Mistral-7B-v0.1's 1 x 32768
    prefill: 2 GiB beside the 1 GiB bool mask)."""
    q, k, v = qkv(kv_heads=32, q_len=1024, kv_len=1024)
    mask = torch.empty(2, 1, 1024, 1024, dtype=torch.bool, device="meta")
    peaks = {}
    for dtype in (torch.bool, torch.bfloat16):
        live = LiveBytes("meta")
        m = mask if dtype == torch.bool else torch.empty_like(mask, dtype=dtype)
        with live, torch.inference_mode(), cuda_semantics() as choices:
            F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        assert choices.sdpa == {1024: {"efficient"}}
        peaks[dtype] = live.peak
    # an additive mask passes through: the kernel's output (b, h, q, d) and meta's two philox
    # scalars (no logsumexp without grad)
    assert peaks[torch.bfloat16] == 2 * 32 * 1024 * 128 * 2 + 2 * 512
    assert peaks[torch.bool] - peaks[torch.bfloat16] == 2 * 1024 * 1024 * 2  # the bf16 copy
