"""llmbench.predict.trace.phases: the traced load / prefill / decode peaks against the
committed H100 reference cells and the hand replay, and every shipped architecture traced or
refused with its reason."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from predict_fixtures import MISTRAL, REPO, cell, device0, load_reference  # noqa: E402

from llmbench import predict  # noqa: E402
from llmbench.predict.trace.model import (  # noqa: E402
    Untraceable,
    build_meta_model,
    converted_parameter_bytes,
    converted_target,
)
from llmbench.predict.trace.phases import trace_cell  # noqa: E402

MODELS = REPO / "config" / "models"
TINY = sorted(p.stem for p in MODELS.glob("tiny-*.json"))
REFERENCE_CELLS = [
    "h100/seed/cells/mistral-7b-v0.3/none/sdpa/bfloat16/b2_s3072.json",
    "h100/seed/cells/mistral-7b-v0.3/none/eager/bfloat16/b2_s3072.json",
    "h100/seed/cells/mistral-7b-v0.3/none/flash_attention_2/bfloat16/b2_s3072.json",
    "h100/seed/cells/mistral-7b-v0.3/none/sdpa/float32/b2_s3072.json",
    "h100/seed/cells/mistral-7b-v0.3/nf4/sdpa/bfloat16/b2_s3072.json",
    "h100/seed/cells/mistral-7b-v0.3/nf4/eager/bfloat16/b2_s3072.json",
    "h100/frontier/frontier/probes/mistral-7b-v0.3/none/sdpa/bfloat16/b1_s32768.json",
    "h100/extended/cells/mistral-7b-v0.3/int8/eager/bfloat16/b2_s1024.json",
]
"""One cell per traced path; ``python -m llmbench.predict.trace.check`` runs all 217."""


def config(name):
    return json.loads((MODELS / f"{name}.json").read_text())


@pytest.mark.parametrize("relpath", REFERENCE_CELLS)
def test_reference_cells_traced_within_0_05_percent(relpath):
    result, c = load_reference(REPO / "results" / "reference" / relpath)
    assert result["status"] == "ok"
    traced = trace_cell(
        MISTRAL,
        c,
        decode_tokens=result["settings"]["measurement"]["decode_tokens"],
        bnb_4bit_compute_dtype=result["settings"]["bnb_4bit_compute_dtype"],
    )
    assert traced.load == device0(result, "load", "peak_allocated_bytes")
    for phase in ("prefill", "decode"):
        measured = device0(result, phase, "peak_allocated_bytes")
        assert getattr(traced, phase) / measured == pytest.approx(1, abs=5e-4), phase


WINDOWED_CELLS = [
    "flash_attention_2/bfloat16/b1_s8192.json",  # FA2 builds no mask: 64 MiB less prefill
    "sdpa/bfloat16/b1_s32768.json",  # the bool mask made bf16 at the kernel: 2 GiB
]
"""Mistral-7B-v0.1 (4096-token window on every layer) on the H200: prompts past the window,
where transformers builds a ``(1, 1, s, s)`` sliding-window mask for SDPA and none for FA2."""


@pytest.mark.parametrize("relpath", WINDOWED_CELLS)
def test_windowed_cells_traced_within_0_001_percent(relpath):
    path = REPO / "results/reference/h200/families/cells/mistral-7b-v0.1/none" / relpath
    result, c = load_reference(path)
    traced = trace_cell(config("mistral-7b-v0.1"), c)
    for phase in ("prefill", "decode"):
        measured = device0(result, phase, "peak_allocated_bytes")
        assert getattr(traced, phase) / measured == pytest.approx(1, abs=1e-5), phase


@pytest.mark.parametrize("model", ["tiny-mistral", "tiny-llama", "tiny-qwen2", "tiny-qwen3"])
@pytest.mark.parametrize(
    ("quant", "attn", "dtype"),
    [
        ("none", "sdpa", "bfloat16"),
        ("none", "eager", "bfloat16"),
        ("none", "flash_attention_2", "bfloat16"),
        ("none", "sdpa", "float32"),
        ("none", "eager", "float16"),
        ("nf4", "sdpa", "bfloat16"),
        ("nf4-dq", "eager", "bfloat16"),
        ("int8", "sdpa", "bfloat16"),
    ],
)
def test_equals_the_hand_replay_where_it_applies(model, quant, attn, dtype):
    """The hand replay is exact on the references for these code paths; the tracer, which
    shares no code with it, gives the same bytes within 1 % - except Qwen3's q/k RMSNorm
    weights (one 512-byte block each per layer), which the hand replay does not know."""
    arch = config(model)
    qk_norms = 2 * arch["num_hidden_layers"] * 512 if model == "tiny-qwen3" else 0
    for batch, seq in ((1, 7), (2, 300)):
        c = cell(quant, attn, dtype, batch=batch, seq=seq, model=model)
        traced, hand = trace_cell(arch, c), predict.predict(arch, c)
        assert traced.load == hand.load.peak_allocated + qk_norms
        assert traced.prefill == pytest.approx(hand.prefill.peak_allocated, rel=0.01)
        assert traced.decode == pytest.approx(hand.decode.peak_allocated, rel=0.01)


@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("attn", ["eager", "sdpa", "flash_attention_2"])
def test_every_shipped_architecture_is_traced_or_says_why(model, attn):
    c = cell("none", attn, "bfloat16", batch=2, seq=40, model=model)
    traced = trace_cell(config(model), c, decode_tokens=4)
    assert 0 < traced.load < traced.decode < traced.prefill


def test_an_all_ones_padding_mask_is_read_as_no_mask_only_where_that_is_exact():
    # OPT builds an all-ones mask; SDPA's causal-mask skip asks whether it is all ones (a
    # value). Prefill (q == kv) and decode (q == 1) give transformers' no-mask answer; a
    # chunked prefill (1 < q < kv) needs the values and says so.
    from transformers import masking_utils

    from llmbench.predict.trace.cuda import cuda_semantics

    mask = torch.ones(2, 40, dtype=torch.bool, device="meta")
    with cuda_semantics():
        skip = masking_utils._ignore_causal_mask_sdpa
        assert skip(mask, 40, 40, 0, 0) is True
        assert skip(mask, 1, 40, 39, 0) is True
        assert skip(mask, 1, 40, 39, 0, local_attention_size=16) is False
        with pytest.raises(RuntimeError, match="data-dependent"):
            skip(mask, 8, 40, 32, 0)
    assert masking_utils._ignore_causal_mask_sdpa is not skip


def test_tied_embeddings_are_counted_once():
    """Gemma-2 ties lm_head to the embedding: one storage (the hand replay counts it twice
    only when ``tie_word_embeddings`` is false; the tracer reads the model)."""
    tied = config("tiny-gemma2")
    untied = {**tied, "tie_word_embeddings": False}
    c = cell("none", "sdpa", "bfloat16", batch=1, seq=8, model="tiny-gemma2")
    embedding = tied["vocab_size"] * tied["hidden_size"] * 2
    assert trace_cell(untied, c).load - trace_cell(tied, c).load == embedding


def test_untraceable_cells_say_why():
    opt = config("tiny-opt")  # no intermediate_size: LLM.int8's outlier model cannot read it
    with pytest.raises(Untraceable, match="outlier model cannot read"):
        trace_cell(opt, cell("int8", "eager", "bfloat16", 1, 8, model="tiny-opt"))
    with pytest.raises(Untraceable, match="transformers cannot build it"):
        trace_cell({**config("tiny-mistral"), "model_type": "mistrall"}, cell(batch=1, seq=8))
    with pytest.raises(Untraceable, match="float32"):
        trace_cell(config("tiny-mistral"), cell("none", "flash_attention_2", "float32", 1, 8))


def test_a_prompt_past_learned_positions_is_untraceable_saying_the_run_refuses_it():
    # the worker's count (grid.support.positions_needed, tests/measure/test_worker.py): a
    # prompt of 2045 and 5 decoded tokens (4 fed back) need 2049; 2044 needs exactly 2048
    opt = config("tiny-opt")  # 2048 learned positions
    with pytest.raises(Untraceable, match="need 2049 positions.*hold 2048"):
        trace_cell(
            opt, cell("none", "eager", "bfloat16", 1, 2045, model="tiny-opt"), decode_tokens=5
        )
    assert trace_cell(
        opt, cell("none", "eager", "bfloat16", 1, 2044, model="tiny-opt"), decode_tokens=5
    )


STATIC_CELLS = [
    "h200/decode/cells/mistral-7b-v0.3/none/sdpa/bfloat16/b16_s512_decode-static.json",
    "h200/decode/cells/mistral-7b-v0.3/nf4/sdpa/bfloat16/b1_s512_decode-static.json",
    "h200/decode/cells/mistral-7b-v0.3/none/sdpa/bfloat16/b1_s512_decode-graph.json",
    "h200/decode/cells/mistral-7b-v0.3/nf4/sdpa/bfloat16/b16_s512_decode-graph.json",
    "h200/decode/cells/mistral-7b-v0.3/none/sdpa-math/bfloat16/b16_s512_decode-graph.json",
    "h200/decode/cells/mistral-7b-v0.3/none/flash_attention_2/bfloat16/b64_s512_decode-static.json",
    "h200/decode/cells/mistral-7b-v0.3/none/flash_attention_2/bfloat16/b16_s4096_decode-static.json",
]
"""Static-cache and CUDA-graph decode cells of the H200 decode reference (every static one
within 0.32 %, FlashAttention-2's padded path included; every graph one within 0.22 %)."""


@pytest.mark.parametrize("relpath", STATIC_CELLS)
def test_static_cache_decode_traced_within_1_percent(relpath):
    from llmbench.grid.spec import Cell

    result = json.loads((REPO / "results" / "reference" / relpath).read_text())
    cell_ = Cell.from_mapping(result["cell"])
    measurement = result["settings"]["measurement"]
    traced = trace_cell(
        config("mistral-7b-v0.3"),
        cell_,
        decode_tokens=measurement["decode_tokens"],
        decode_warmup_tokens=measurement["decode_warmup_tokens"],
    )
    phases = result["memory"]["phases"]
    for name, predicted in (("prefill", traced.prefill), ("decode", traced.decode)):
        measured = phases[name]["devices"][0]["peak_allocated_bytes"]
        assert measured / predicted == pytest.approx(1.0, abs=0.01), name


def test_static_cache_is_allocated_whole_from_the_prefill():
    from llmbench.grid.spec import Cell

    tiny = config("tiny-mistral")
    static = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 2, 64, decode_mode="static")
    eager = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 2, 64)
    traced = trace_cell(tiny, static, decode_tokens=8)
    # K and V of every layer: (batch, kv heads, prompt + decode_tokens, head_dim), bfloat16,
    # and its write position (an int64 scalar on the device, one 512-byte block)
    head_dim = tiny["hidden_size"] // tiny["num_attention_heads"]
    layer = 2 * 2 * tiny["num_key_value_heads"] * (64 + 8) * head_dim
    assert traced.decode_kv == tiny["num_hidden_layers"] * (2 * layer + 512)
    assert traced.decode >= traced.load + traced.decode_kv
    assert traced.prefill == trace_cell(tiny, eager, decode_tokens=8).prefill  # same memory pass


@pytest.mark.parametrize(
    ("attn", "mode", "reason"),
    [("flash_attention_2", "graph", "cannot be captured")],
)
def test_what_the_tracer_does_not_model_is_refused(attn, mode, reason):
    from llmbench.grid.spec import Cell

    cell_ = Cell("tiny-mistral", "none", attn, "bfloat16", 1, 64, decode_mode=mode)
    with pytest.raises(Untraceable, match=reason):
        trace_cell(config("tiny-mistral"), cell_, decode_tokens=8)


QUANT_KNOB_CELLS = [
    "h200/quant/cells/mistral-7b-v0.3/int8/sdpa/bfloat16/b1_s1024_t0.json",
    "h200/quant/cells/mistral-7b-v0.3/int8/sdpa/bfloat16/b1_s1024.json",
    "h200/quant/cells/mistral-7b-v0.3/nf4/sdpa/bfloat16/b1_s1024_c-fp32.json",
]
"""Cells of the H200 quant reference whose bitsandbytes knobs change the trace: LLM.int8's
outlier threshold (0: no outlier decomposition; 6.0 leaves ~0.4 GiB of outlier state and
scratch at 1 x 1024) and the 4-bit compute dtype (float32 activations in the 4-bit layers)."""


@pytest.mark.parametrize("relpath", QUANT_KNOB_CELLS)
def test_bitsandbytes_knobs_are_traced_as_the_cell_sets_them(relpath):
    from llmbench.grid.spec import Cell

    result = json.loads((REPO / "results" / "reference" / relpath).read_text())
    traced = trace_cell(
        config("mistral-7b-v0.3"),
        Cell.from_mapping(result["cell"]),
        decode_tokens=result["settings"]["measurement"]["decode_tokens"],
        bnb_4bit_compute_dtype=result["settings"]["bnb_4bit_compute_dtype"],
    )
    phases = result["memory"]["phases"]
    for name, predicted in (("prefill", traced.prefill), ("decode", traced.decode)):
        measured = phases[name]["devices"][0]["peak_allocated_bytes"]
        assert measured / predicted == pytest.approx(1.0, abs=0.002), name


def test_the_load_transient_of_a_checkpoint_conversion_is_its_largest_fused_parameter():
    # transformers 5.17 fuses each layer's 60 per-expert gate/up weights into one gate_up_proj
    # while loading; the H200 cell's load peaked that much above what stayed allocated
    path = (
        "results/reference/h200/families/cells/qwen1.5-moe-a2.7b/none/sdpa/bfloat16/b8_s1024.json"
    )
    result, c = load_reference(REPO / path)
    converted = converted_parameter_bytes(build_meta_model(config("qwen1.5-moe-a2.7b"), c))
    assert converted == 60 * 2 * 1408 * 2048 * 2  # gate_up_proj, bf16: 660 MiB
    transient = device0(result, "load", "peak_allocated_bytes") - device0(
        result, "load", "allocated_bytes"
    )
    assert abs(transient - converted) <= 4096
    assert converted_parameter_bytes(build_meta_model(MISTRAL, c)) == 0  # nothing converted


def test_the_trace_records_the_largest_weight_bitsandbytes_quantizes():
    tiny = config("tiny-mistral")
    nf4 = trace_cell(tiny, cell("nf4", batch=1, seq=16, model="tiny-mistral"), decode_tokens=2)
    assert nf4.load_quantized_elements == 384 * 128  # gate/up/down: intermediate x hidden
    plain = trace_cell(tiny, cell(batch=1, seq=16, model="tiny-mistral"), decode_tokens=2)
    assert (plain.load_quantized_elements, plain.load_converted) == (0, 0)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.gate_up_proj", True),
        (".experts.gate_up_proj", "model.layers.3.block_sparse_moe.experts.gate_up_proj", True),
        (r"\.experts.gate_up_proj", "model.layers.0.mlp.experts.gate_up_proj", True),
        (r"\.gate_up_proj.weight", "model.layers.0.mlp.gate_up_proj.weight", True),
        ("mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.gate_up_proj_bias", False),
        ("mlp.experts.down_proj", "model.layers.0.xmlp.experts.down_proj", False),
    ],
)
def test_conversion_targets_are_read_as_transformers_reads_them(pattern, name, matches):
    # plain, leading-dot and backslash-escaped target forms of transformers' conversion_mapping
    assert bool(converted_target(pattern).search(name)) is matches


def test_a_mixtral_style_conversion_is_found_too():
    tiny = config("tiny-mixtral")
    model = build_meta_model(tiny, cell(batch=1, seq=16, model="tiny-mixtral"))
    experts, hidden = tiny["num_local_experts"], tiny["hidden_size"]
    gate_up = experts * 2 * tiny["intermediate_size"] * hidden * 2  # bf16
    assert converted_parameter_bytes(model) == gate_up
