"""llmbench.predict.forward: logits over the positions a forward computes, and the KV cache
growing by torch.cat during decode (on a hand-computed shape)."""

from __future__ import annotations

from predict_fixtures import TINY, cell, granule

from llmbench import predict
from llmbench.predict import Architecture


def test_logits_over_all_positions_at_prefill_one_at_decode():
    b, s = 2, 512
    arch_config = {**TINY, "vocab_size": 200_000}  # make the logits the peak
    prediction = predict.predict(arch_config, cell(batch=b, seq=s))
    assert prediction.prefill.stage == "lm_head (logits)"
    assert prediction.prefill.peak.logits == b * s * 200_000 * 2
    assert prediction.decode.peak.logits <= granule(b * 1 * 200_000 * 2)


def test_decode_holds_the_grown_cache_and_one_layer_of_cat():
    b, s = 2, 1000
    arch = Architecture.from_config(TINY)
    prediction = predict.predict(TINY, cell(batch=b, seq=s), decode_tokens=32)
    peak = prediction.decode.peak
    # Last step: cache grows from s+30 to s+31 tokens; during the cat of one layer's V the
    # old V (s+30 tokens) is still alive.
    assert peak.kv_cache == 2 * arch.kv_bytes(b, s + 31, 2)
    assert peak.kv_cache_growth == arch.kv_bytes(b, s + 30, 2) // 2
