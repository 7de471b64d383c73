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
