"""llmbench.predict.trace.livebytes: storages counted once, rounded to 512 bytes, freed when
Python frees them; composite ops decomposed as a GPU runs them; overrides."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llmbench.predict.trace.livebytes import LiveBytes  # noqa: E402


def meta(*shape, dtype=None):
    return torch.empty(*shape, dtype=dtype or torch.float32, device="meta")


def test_new_storage_counted_once_rounded_and_freed():
    live = LiveBytes("meta")
    with live:
        a = meta(10)  # 40 bytes -> one 512-byte block
        assert live.live == 512
        view = a[2:]  # a view: same storage
        assert live.live == 512
        b = a + 1
        assert live.live == 1024
        del a, view
        assert live.live == 512
        del b
    assert live.live == 0
    assert live.peak == 1024


def test_reset_peak_starts_from_the_bytes_alive():
    live = LiveBytes("meta")
    with live:
        keep = meta(1024)  # 4096 bytes
        tmp = meta(2048)
        del tmp
        live.reset_peak()
        assert live.peak == 4096
        _ = keep * 2
    assert live.peak == 8192


def test_other_devices_are_ignored_and_tracked_inputs_counted():
    live = LiveBytes("meta")
    with live:
        cpu = torch.ones(1000)
        assert live.live == 0
        outside = None
    outside = meta(256)
    live.track(outside)
    assert live.live == 1024
    del cpu


def test_softmax_to_float32_shows_its_float32_copy():
    """ATen's softmax(dtype=float32) of a bf16 input converts first (SoftMax.cpp), a copy the
    composite op hides unless it is decomposed: input 2 + copy 4 + output 4 bytes/element."""
    n = 1 << 20
    x = meta(n, dtype=torch.bfloat16)
    live = LiveBytes("meta")
    live.track(x)
    with live, torch.inference_mode():
        y = torch.nn.functional.softmax(x, dim=-1, dtype=torch.float32)
    assert live.peak == 2 * n + 4 * n + 4 * n
    del y


def test_dropout_in_eval_returns_its_input():
    """ATen's dropout returns the input when not training (no clone, unlike the Python
    decomposition ``OpOverload.decompose`` would pick)."""
    x = meta(1 << 16)
    live = LiveBytes("meta")
    live.track(x)
    with live, torch.inference_mode():
        y = torch.nn.functional.dropout(x, p=0.0, training=False)
    assert live.peak == 4 * (1 << 16)
    assert y.untyped_storage().nbytes() == x.untyped_storage().nbytes()


def test_override_replaces_an_op_by_its_allocations():
    def fake_mm(a, b):
        scratch = torch.empty(4096, dtype=torch.uint8, device=a.device)
        out = torch.empty(a.shape[0], b.shape[1], device=a.device)
        del scratch
        return out

    live = LiveBytes("meta", {torch.ops.aten.mm.default: fake_mm})
    a, b = meta(8, 8), meta(8, 8)
    with live, torch.inference_mode():
        out = torch.mm(a, b)
    assert out.shape == (8, 8)
    assert live.peak == 4096 + 512
