"""llmbench.predict.kvcache: the quantized cache's stored bytes and token split, its decode
transient checked against live bytes on the CPU (quanto), and predict_cell's answer for a
kv_cache cell (the hand replay of its model-dtype twin with the KV terms replaced)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from predict_fixtures import MISTRAL, REPO

from llmbench.grid.spec import Cell
from llmbench.predict.architecture import Architecture
from llmbench.predict.kvcache import (
    RESIDUAL_LENGTH,
    decode_transient_bytes,
    kv_cache_bytes,
    quantized_tensor_bytes,
    split_tokens,
)
from llmbench.predict.method import Unpredictable, predict_cell

MODELS = {"mistral-7b-v0.3": {"architecture": "config/models/mistral-7b-v0.3.json"}}


def cell(kv="quanto-int4", batch=1, seq=8192, **changes):
    return Cell("mistral-7b-v0.3", "none", "sdpa", "bfloat16", batch, seq, kv_cache=kv, **changes)


def test_packed_data_scale_and_zero_per_group_of_64():
    assert quantized_tensor_bytes(64 * 8, 4, 2) == 64 * 8 // 2 + 2 * 8 * 2
    assert quantized_tensor_bytes(64 * 8, 2, 2) == 64 * 8 // 4 + 2 * 8 * 2
    assert quantized_tensor_bytes(100, 4, 2) is None  # not whole groups: the libraries pad
    assert quantized_tensor_bytes(64 * 2, 2, 2) is None  # 2 groups do not fill a 2-bit byte


def test_the_residual_empties_every_residual_length_steps():
    assert split_tokens(100, 0) == (100, 0)
    assert split_tokens(100, 31) == (100, 31)
    assert split_tokens(100, RESIDUAL_LENGTH - 1) == (100, RESIDUAL_LENGTH - 1)
    assert split_tokens(100, RESIDUAL_LENGTH) == (100 + RESIDUAL_LENGTH, 0)
    assert split_tokens(100, RESIDUAL_LENGTH + 1) == (100 + RESIDUAL_LENGTH, 1)


def test_int4_stores_about_a_quarter_of_bfloat16_and_int2_an_eighth():
    arch = Architecture.from_config(MISTRAL)
    full = 2 * 32 * 8 * 128 * 8192 * 2  # K and V, 32 layers, 8 kv heads x 128, bf16
    int4 = kv_cache_bytes(arch, cell(), 0)
    int2 = kv_cache_bytes(arch, cell("hqq-int2"), 0)
    assert int4.residual == int2.residual == 0
    # packed n/2 bytes + scale and zero (2 x 2 bytes) per 64 values: full / 4 + full / 32
    assert int4.total == full // 4 + full // 32
    assert int2.total == full // 8 + full // 32
    with pytest.raises(ValueError, match="no quantized KV cache"):
        kv_cache_bytes(arch, cell("model"), 0)


def test_decode_transient_matches_live_bytes_of_a_quanto_update_on_the_cpu():
    torch = pytest.importorskip("torch")
    pytest.importorskip("optimum.quanto")
    from transformers import AutoConfig, QuantizedCache

    from llmbench.predict.trace.livebytes import LiveBytes

    tiny = {**MISTRAL, "num_hidden_layers": 1}
    arch = Architecture.from_config(tiny)
    small = Cell("mistral-7b-v0.3", "none", "sdpa", "bfloat16", 1, 1024, kv_cache="quanto-int4")
    cache = QuantizedCache(backend="quanto", config=AutoConfig.for_model(**tiny), nbits=4)
    shape = (1, arch.shape.num_kv_heads, small.seq, arch.shape.head_dim)
    with torch.inference_mode():
        prompt = torch.randn(shape, dtype=torch.bfloat16)
        cache.update(prompt, prompt.clone(), 0)
        del prompt
        token = torch.randn(1, arch.shape.num_kv_heads, 1, arch.shape.head_dim).bfloat16()
        mode = LiveBytes(device_type="cpu")
        with mode:
            keys, values = cache.update(token, token, 0)  # step 1
        predicted = decode_transient_bytes(arch, small, 1, 2)
    assert mode.peak_at == "aten.cat.default"
    # the new residual (one token of K and V) is all that the formula leaves out
    assert predicted <= mode.peak <= predicted + 4 * 512


def test_a_kv_cache_cell_is_the_hand_replay_with_its_kv_terms_replaced(tmp_path):
    model_dtype = predict_cell(cell("model"), MODELS, REPO, trace_cache=tmp_path)
    int4 = predict_cell(cell(), MODELS, REPO, trace_cache=tmp_path)
    int2 = predict_cell(cell("quanto-int2"), MODELS, REPO, trace_cache=tmp_path)
    assert int4.method == "hand replay + quantized KV cache (predict.kvcache)"
    assert int4.load == model_dtype.load
    arch = Architecture.from_config(MISTRAL)
    after_prefill = kv_cache_bytes(arch, cell(), 0).total
    saved = model_dtype.prefill.peak.kv_cache - after_prefill
    assert int4.prefill.peak_allocated == model_dtype.prefill.peak_allocated - saved
    assert int4.decode.peak.kv_cache_growth == decode_transient_bytes(arch, cell(), 31, 2)
    assert int2.decode.peak_allocated < int4.decode.peak_allocated
    assert int4.decode.peak_allocated < model_dtype.decode.peak_allocated
    assert "not modelled" in int4.decode.stage


def test_a_kv_cache_cell_the_hand_replay_cannot_answer_says_why(tmp_path):
    static = predict_cell(cell(decode_mode="static"), MODELS, REPO, trace_cache=tmp_path)
    assert isinstance(static, Unpredictable) and "decode_mode static" in static.reason
    odd = replace(cell(), batch=1)
    assert not isinstance(predict_cell(odd, MODELS, REPO, trace_cache=tmp_path), Unpredictable)
