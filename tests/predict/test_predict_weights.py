"""llmbench.predict.weights: the weights after load by storage format, on a hand-computed
shape and exactly as the committed H100 reference cells recorded them."""

from __future__ import annotations

from predict_fixtures import (
    MISTRAL,
    PROJECTION_PARAMS,
    TINY,
    cell,
    reference_rows,
)

from llmbench import predict
from llmbench.predict import (
    NF4_LOAD_RESIDUAL_BYTES,
    Architecture,
    weight_breakdown,
)


def test_unquantized_weights_by_dtype():
    w = weight_breakdown(Architecture.from_config(TINY), "none", "bfloat16")
    embeddings = 2 * 2048 * 128 * 2  # untied embed_tokens and lm_head
    norms = (2 * 2 + 1) * 128 * 2
    layers = 2 * PROJECTION_PARAMS * 2
    assert w.dense == embeddings + norms + layers
    assert w.buffers == 2 * 16 * 4  # inv_freq and original_inv_freq, float32
    assert w.by_dtype == {"bfloat16": embeddings + norms + layers, "float32": 128}
    assert w.quantized == w.quant_scales == w.quant_nested == w.load_residual == 0
    # Allocated: every tensor rounded to 512 bytes (norm weights 256 -> 512, buffers 64 -> 512).
    assert w.allocated == embeddings + layers + 5 * 512 + 2 * 512


def test_tied_embeddings_count_once():
    untied = weight_breakdown(Architecture.from_config(TINY), "none", "bfloat16")
    tied = weight_breakdown(
        Architecture.from_config({**TINY, "tie_word_embeddings": True}), "none", "bfloat16"
    )
    assert untied.dense - tied.dense == 2048 * 128 * 2


def test_nf4_weights_packed_with_fp32_absmax_per_64():
    w = weight_breakdown(Architecture.from_config(TINY), "nf4", "bfloat16")
    n = 2 * PROJECTION_PARAMS
    assert w.quantized == n // 2  # two 4-bit values per uint8
    blocks = [128 * 128 // 64, 64 * 128 // 64, 64 * 128 // 64, 128 * 128 // 64] + [
        384 * 128 // 64
    ] * 3
    assert w.quant_scales == 2 * 4 * sum(blocks) == 4 * n // 64
    assert w.quant_code == 2 * 7 * 16 * 4  # 16-entry float32 NF4 code per layer
    assert w.by_dtype["uint8"] == n // 2
    assert w.by_dtype["float32"] == 4 * n // 64 + 2 * 7 * 64 + 128
    assert w.by_dtype["bfloat16"] == 2 * 2048 * 128 * 2 + 5 * 128 * 2  # embeddings, lm_head, norms
    assert w.load_residual == NF4_LOAD_RESIDUAL_BYTES


def test_nf4_double_quant_uint8_absmax_and_nested_state():
    w = weight_breakdown(Architecture.from_config(TINY), "nf4-dq", "bfloat16")
    blocks = [256, 128, 128, 256, 768, 768, 768]
    assert w.quant_scales == 2 * sum(blocks)  # absmax as uint8
    outer = sum(-(-b // 256) for b in blocks)  # fp32 absmax per 256 blocks
    assert w.quant_nested == 2 * (4 * outer + 7 * (256 * 4 + 4))  # + 256-entry code, offset
    plain = weight_breakdown(Architecture.from_config(TINY), "nf4", "bfloat16")
    assert w.total < plain.total


def test_int8_weights_with_fp32_row_scales():
    w = weight_breakdown(Architecture.from_config(TINY), "int8", "bfloat16")
    assert w.quantized == w.by_dtype["int8"] == 2 * PROJECTION_PARAMS
    rows = 128 + 64 + 64 + 128 + 384 + 384 + 128
    assert w.quant_scales == 2 * 4 * rows  # SCB: float32 per output row
    assert w.by_dtype["float32"] == w.quant_scales + 128


def test_fp8_weights_one_byte_each_with_fp32_row_scales():
    for quant in ("fp8", "fp8-dyn"):  # torchao Float8Tensor: qdata + float32 scale (out, 1)
        w = weight_breakdown(Architecture.from_config(TINY), quant, "bfloat16")
        assert w.quantized == w.by_dtype["float8_e4m3fn"] == 2 * PROJECTION_PARAMS
        rows = 128 + 64 + 64 + 128 + 384 + 384 + 128
        assert w.quant_scales == 2 * 4 * rows
        assert w.by_dtype["float32"] == w.quant_scales + 128
        assert w.load_residual == w.quant_nested == w.quant_code == 0


def test_quantization_orders_the_weights():
    sizes = {
        q: predict.predict(MISTRAL, cell(quant=q)).load.peak_allocated
        for q in ("none", "int8", "nf4", "nf4-dq", "nf4-not-passed")
    }
    assert sizes["none"] == sizes["nf4-not-passed"] > sizes["int8"] > sizes["nf4"]
    assert sizes["nf4"] > sizes["nf4-dq"]


def test_reference_weight_bytes_by_dtype_exactly():
    seen = set()
    for path, result, c, prediction in reference_rows():
        expected = result["model"]["weights"]["weight_bytes_by_dtype"]
        assert prediction.weights.by_dtype == expected, path
        seen.add(c.quant)
    assert {"none", "int8", "nf4"} <= seen


def test_fp4_is_stored_as_nf4():
    arch = Architecture.from_config(TINY)
    for dq in ("", "-dq"):
        assert weight_breakdown(arch, f"fp4{dq}", "bfloat16") == weight_breakdown(
            arch, f"nf4{dq}", "bfloat16"
        )
    assert weight_breakdown(arch, "fp4", "bfloat16").load_residual == NF4_LOAD_RESIDUAL_BYTES


def test_the_memoized_breakdown_is_never_another_keys():
    """weight_breakdown is memoized: each key (architecture, quant, dtype) gets its own answer,
    the one an uncached call computes, whatever was asked before it."""
    weight_breakdown.cache_clear()
    untied = Architecture.from_config(TINY)
    keys = [
        (untied, "none", "bfloat16"),
        (untied, "nf4", "bfloat16"),  # same architecture, another quant
        (untied, "none", "float32"),  # same architecture, another dtype
        (Architecture.from_config({**TINY, "tie_word_embeddings": True}), "none", "bfloat16"),
        (Architecture.from_config({**TINY, "num_hidden_layers": 3}), "none", "bfloat16"),
    ]
    answers = [weight_breakdown(*key) for key in keys + keys]  # second round from the cache
    fresh = [weight_breakdown.__wrapped__(*key) for key in keys]
    assert answers == fresh + fresh
    assert len({(w.allocated, w.dense, w.quantized) for w in fresh}) == len(keys)
    assert weight_breakdown.cache_info().hits == len(keys)
