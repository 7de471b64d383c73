"""llmbench.predict.attention: which kernel a cell runs, and the score, mask and softmax
tensors each kernel keeps (on a hand-computed shape)."""

from __future__ import annotations

import pytest
from predict_fixtures import TINY, cell

from llmbench import predict
from llmbench.predict import (
    Architecture,
    attention_path,
)


@pytest.mark.parametrize(
    ("dtype", "bytes_per_score"),
    # bf16: scores + float32 copy + float32 softmax; fp16: fused half->float, then the cast;
    # fp32: no copies.
    [("bfloat16", 2 + 4 + 4), ("float16", 2 + 4 + 2), ("float32", 4 + 4)],
)
def test_eager_scores_with_float32_softmax(dtype, bytes_per_score):
    b, s = 2, 1024
    prediction = predict.predict(TINY, cell(attn="eager", dtype=dtype, batch=b, seq=s))
    assert prediction.prefill.stage.endswith("attention (eager)")
    assert prediction.prefill.peak.attention_scores == bytes_per_score * b * 4 * s * s
    # The additive mask (b, 1, s, s) in the model dtype is resident during the forward.
    mask = prediction.prefill.peak.attention_mask
    assert mask == b * s * s * predict.DTYPE_BYTES[dtype]


def test_math_path_scores_softmax_and_neginf_mask():
    b, s = 2, 1024
    prediction = predict.predict(TINY, cell(attn="sdpa-math", batch=b, seq=s))
    # float32 scores + float32 _safe_softmax output + bool isneginf: 9 bytes per score.
    assert prediction.prefill.peak.attention_scores == 9 * b * 4 * s * s
    assert prediction.prefill.peak.attention_mask == 4 * s * s  # causal (s, s) float32


@pytest.mark.parametrize("attn", ["sdpa", "sdpa-flash", "sdpa-efficient", "flash_attention_2"])
def test_fused_attention_keeps_no_score_matrix(attn):
    prediction = predict.predict(TINY, cell(attn=attn, batch=2, seq=2048))
    assert prediction.prefill.peak.attention_scores == 0
    assert prediction.prefill.peak.attention_mask == 0


def test_sdpa_backend_choice():
    gqa = Architecture.from_config(TINY)
    mha = Architecture.from_config({**TINY, "num_key_value_heads": 4})
    assert attention_path(cell(attn="sdpa"), gqa, 64) == "flash"
    assert attention_path(cell(attn="sdpa", dtype="float32"), gqa, 64) == "math"
    assert attention_path(cell(attn="sdpa", dtype="float32"), mha, 64) == "efficient"
    assert attention_path(cell(attn="sdpa-cudnn"), gqa, 64) == "cudnn"
    assert attention_path(cell(attn="eager"), gqa, 64) == "eager"
