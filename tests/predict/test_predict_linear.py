"""llmbench.predict.linear: the bitsandbytes 4-bit layer dequantizes its weight only beyond
four rows."""

from __future__ import annotations

from predict_fixtures import TINY, cell

from llmbench import predict
from llmbench.predict import Architecture
from llmbench.predict.linear import _linear
from llmbench.predict.replay import _Context, _Replay


def test_nf4_dequantizes_the_weight_only_beyond_four_rows():
    one_row = predict.predict(TINY, cell(quant="nf4", batch=1, seq=1024))
    arch = Architecture.from_config(TINY)
    # Decode with batch 1: the fused 4-bit kernel, no dequantized weight.
    assert one_row.decode.peak.quant_scratch == 0
    # Prefill of 1024 rows: dequantize + F.linear; the biggest weight is 384 x 128 in bf16.
    r = _Replay()
    ctx = _Context(arch, cell(quant="nf4"), 2, "bfloat16")
    _linear(r, ctx, 8, "gate_proj", "mlp_activations")
    assert r.peak().quant_scratch == 384 * 128 * 2


def test_fp8_weight_only_dequantizes_through_float32_every_time():
    arch = Architecture.from_config(TINY)
    r = _Replay()
    _linear(r, _Context(arch, cell(quant="fp8"), 2, "bfloat16"), 1, "gate_proj", "mlp_activations")
    n = 384 * 128
    # qdata.to(float32) and its product with the scales, then the bf16 weight
    assert r.peak().quant_scratch == 4 * n + 4 * n + 2 * n
    assert r.live and all(term == "mlp_activations" for term, _ in r.live.values())


def test_fp8_dynamic_quantizes_the_activation_rows():
    arch = Architecture.from_config(TINY)
    r = _Replay()
    ctx = _Context(arch, cell(quant="fp8-dyn"), 2, "bfloat16")
    _linear(r, ctx, 1024, "down_proj", "mlp_activations")
    rows_in = 1024 * 384
    # three float32 copies and the float8 result of the (1024, 384) input, its float32 scales
    assert r.peak().quant_scratch == 3 * 4 * rows_in + rows_in + 4 * 1024
    assert r.peak().mlp_activations == 0  # the output comes after the transients are gone


def test_fp8_load_adds_the_quantize_transient_of_the_largest_weight():
    load = predict.predict(TINY, cell(quant="fp8")).load
    none = predict.predict(TINY, cell(quant="none")).load
    assert load.peak.load_staging == 384 * 128 * (2 + 3 * 4)
    assert load.peak.weights < none.peak.weights
