"""llmbench.predict.method: the tracer's cached result answers a cell (the hand replay kept as
a cross-check), the hand replay answers where it applies, and otherwise the cell is
Unpredictable with each method's reason."""

from __future__ import annotations

import json

import pytest
from predict_fixtures import REPO, cell

from llmbench.predict.method import Unpredictable, hand_replay_reason, predict_cell
from llmbench.predict.prediction import Prediction
from llmbench.predict.trace.cache import cached_trace, read_entry, trace_key

MODELS = {
    name: {"architecture": f"config/models/{name}.json"}
    for name in ("tiny-mistral", "tiny-opt", "tiny-gemma2", "mistral-7b-v0.1")
}


def config(name):
    return json.loads((REPO / "config" / "models" / f"{name}.json").read_text())


def test_hand_replay_applies_to_its_families_below_their_window():
    assert hand_replay_reason(config("tiny-mistral"), cell(seq=4096), 32) is None
    assert "model_type 'gemma2'" in hand_replay_reason(config("tiny-gemma2"), cell(), 32)
    v01 = config("mistral-7b-v0.1")  # sliding_window 4096
    assert hand_replay_reason(v01, cell(seq=4065), 32) is None  # 4065 + 31 steps = 4096
    assert "sliding window (4096 tokens)" in hand_replay_reason(v01, cell(seq=4066), 32)


def test_without_a_cached_trace_the_hand_replay_answers_or_the_cell_says_why(tmp_path):
    mistral = predict_cell(cell(model="tiny-mistral"), MODELS, REPO, trace_cache=tmp_path)
    assert isinstance(mistral, Prediction) and mistral.method == "hand replay"
    assert mistral.cross_check is None
    gemma = predict_cell(cell(model="tiny-gemma2"), MODELS, REPO, trace_cache=tmp_path)
    assert isinstance(gemma, Unpredictable)
    assert "model_type 'gemma2'" in gemma.reason and "not traced yet" in gemma.reason


def test_the_cached_trace_answers_with_the_hand_replay_as_cross_check(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    cases = (("tiny-mistral", "none", "sdpa"), ("tiny-gemma2", "none", "eager"),
             ("tiny-opt", "none", "sdpa"), ("tiny-opt", "int8", "sdpa"))  # fmt: skip
    for model, quant, attn in cases:
        c = cell(quant, attn=attn, batch=1, seq=16, model=model)
        entry = cached_trace(
            config(model), c, decode_tokens=32, compute_dtype="bfloat16", cache_dir=tmp_path,
            allow_trace=True,
        )  # fmt: skip
        key = json.loads(json.dumps(trace_key(config(model), c, decode_tokens=32,
                                              compute_dtype="bfloat16")))  # fmt: skip
        assert read_entry(tmp_path, key) == entry
    mistral = predict_cell(cell("none", "sdpa", batch=1, seq=16, model="tiny-mistral"), MODELS,
                           REPO, trace_cache=tmp_path)  # fmt: skip
    assert mistral.method == "tracer"
    # generate()'s prefill is not traced: the hand replay's, labelled as such
    assert mistral.generate_prefill.stage.startswith("hand replay: ")
    assert mistral.prefill.peak_allocated == pytest.approx(mistral.cross_check[1], rel=0.01)
    assert mistral.prefill.peak.traced > 0 and mistral.prefill.peak.cuda_workspace > 0
    arch = config("tiny-mistral")  # K and V of 16 tokens, every layer, one 512-byte block min.
    head_dim = arch["hidden_size"] // arch["num_attention_heads"]
    kv = 2 * arch["num_hidden_layers"] * max(512, arch["num_key_value_heads"] * 16 * head_dim * 2)
    assert mistral.prefill.peak.kv_cache == kv
    gemma = predict_cell(cell("none", "eager", batch=1, seq=16, model="tiny-gemma2"), MODELS,
                         REPO, trace_cache=tmp_path)  # fmt: skip
    assert gemma.method == "tracer" and gemma.cross_check is None
    assert gemma.prefill.stage.startswith("traced: after aten.")
    opt = predict_cell(cell("none", "sdpa", batch=1, seq=16, model="tiny-opt"), MODELS, REPO,
                       trace_cache=tmp_path)  # fmt: skip
    assert opt.method == "tracer" and opt.generate_prefill is None  # no replay for OPT
    int8 = predict_cell(cell("int8", "sdpa", batch=1, seq=16, model="tiny-opt"), MODELS, REPO,
                        trace_cache=tmp_path)  # fmt: skip
    assert isinstance(int8, Unpredictable) and "outlier model cannot read" in int8.reason
    # another decode length is another key: not cached, so the hand replay or nothing
    other = predict_cell(cell("none", "eager", batch=1, seq=16, model="tiny-gemma2"), MODELS,
                         REPO, trace_cache=tmp_path, decode_tokens=8)  # fmt: skip
    assert isinstance(other, Unpredictable)


def test_a_traced_load_peaks_with_its_conversion_or_its_quantizing_on_load():
    from llmbench.predict.method import traced_prediction

    entry = {"load": 10_000_000, "prefill": 20_000_000, "decode": 15_000_000,
             "prefill_at": "aten.mm", "decode_at": "aten.mm",
             "load_converted": 700_000, "load_quantized_elements": 400_000}  # fmt: skip
    nf4 = cell("nf4", batch=1, seq=16)
    # pre-quantized: only the conversion's transient; after the load, the weights alone
    load = traced_prediction(nf4, entry).load
    assert (load.peak_allocated, load.allocated_after) == (10_700_000, 10_000_000)
    # quantized on load: the larger of the two (the bf16 weight, 800,000 bytes)
    load = traced_prediction(nf4, entry, prequantized=False).load
    assert (load.peak_allocated, load.allocated_after) == (10_800_000, 10_000_000)
    # nothing is quantized in an unquantized cell, whatever its checkpoint
    assert traced_prediction(cell(), entry, prequantized=False).load.peak_allocated == 10_700_000
