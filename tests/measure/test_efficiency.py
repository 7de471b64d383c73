"""Work counted from the model config, checked against known figures of Mistral-7B-v0.3."""

import json

import pytest

from llmbench.measure.efficiency import (
    Shape,
    decode_step_bytes,
    device_peak,
    efficiency,
    prefill_flops,
)


@pytest.fixture
def mistral(repo):
    return Shape.from_config(json.loads((repo / "config/models/mistral-7b-v0.3.json").read_text()))


def test_mistral_parameter_count(mistral):
    embedding = mistral.vocab_size * mistral.hidden_size
    norms = (2 * mistral.num_layers + 1) * mistral.hidden_size
    total = mistral.linear_params + embedding + norms
    assert total == 7_248_023_552  # Mistral-7B-v0.3's published parameter count


def test_prefill_flops_is_linear_plus_causal_attention(mistral):
    batch, seq = 2, 3072
    linear = 2 * batch * seq * mistral.linear_params
    attention = 2 * batch * 32 * 128 * seq * seq * 32
    assert prefill_flops(mistral, batch, seq) == pytest.approx(linear + attention)


def test_decode_bytes_are_weights_plus_kv(mistral):
    kv_per_token = 2 * 32 * 8 * 128 * 2
    assert mistral.kv_bytes_per_token(2) == kv_per_token == 131072
    assert decode_step_bytes(mistral, 2, 99, 10**9, 2) == 10**9 + 2 * 100 * kv_per_token


def test_peaks_are_matched_by_device_name():
    assert device_peak("NVIDIA H100 80GB HBM3").memory_bandwidth_bytes_s == 3.35e12
    assert device_peak("NVIDIA H100 PCIe").bf16_flops == 756e12
    assert device_peak("Quadro K600") is None


def test_mfu_and_mbu_from_timings(mistral):
    result = efficiency(
        mistral,
        batch=2,
        seq=3072,
        compute_dtype="bfloat16",
        kv_dtype="bfloat16",
        weight_bytes_read_per_step=14_227_000_000,
        prefill_ms=183.6,
        decode_ms_per_step=59.5,
        decode_tokens=32,
        device_name="NVIDIA H100 80GB HBM3",
        n_devices=1,
    )
    assert result.mfu == pytest.approx(result.prefill_tflops_per_s * 1e12 / 989.4e12)
    assert 0.4 < result.mfu < 0.6
    assert result.mbu == pytest.approx(result.decode_gb_per_s * 1e9 / 3.35e12)
    unknown = efficiency(
        mistral,
        batch=1,
        seq=8,
        compute_dtype="float32",
        kv_dtype="float32",
        weight_bytes_read_per_step=1,
        prefill_ms=1.0,
        decode_ms_per_step=1.0,
        decode_tokens=2,
        device_name=None,
        n_devices=0,
    )
    assert unknown.mfu is None and unknown.mbu is None and unknown.prefill_tflops_per_s > 0


def test_floor_and_utilisation_against_the_measured_limits(mistral):
    measured = {"copy_bandwidth_bytes_s": 4.0e12, "bf16_matmul_flops": 800e12}
    arguments = dict(
        batch=1,
        seq=512,
        kv_dtype="bfloat16",
        weight_bytes_read_per_step=14_000_000_000,
        prefill_ms=50.0,
        decode_ms_per_step=7.0,
        decode_tokens=32,
        device_name="NVIDIA H200",
        n_devices=1,
        measured=measured,
    )
    result = efficiency(mistral, compute_dtype="bfloat16", **arguments)
    assert result.decode_floor_ms == pytest.approx(result.decode_bytes_per_step / 4.0e12 * 1e3)
    assert result.decode_floor_ms > 14_000_000_000 / 4.0e12 * 1e3  # the KV cache counts too
    assert result.mbu_measured == pytest.approx(result.decode_floor_ms / 7.0)
    assert result.mfu_measured == pytest.approx(result.mfu * 989.4e12 / 800e12)
    fp32 = efficiency(mistral, compute_dtype="float32", **arguments)
    assert fp32.mfu_measured is None  # a bf16 matmul rate says nothing of float32 compute
    none = efficiency(mistral, compute_dtype="bfloat16", **{**arguments, "measured": None})
    assert none.decode_floor_ms is None and none.mbu_measured is None


def _config(repo, name):
    return json.loads((repo / f"config/models/{name}.json").read_text())


def test_a_sliding_window_caps_what_each_windowed_layer_reads_and_attends(repo):
    v01 = Shape.from_config(_config(repo, "mistral-7b-v0.1"))  # 4096 window, every layer
    assert (v01.sliding_window, v01.windowed_layers) == (4096, 32)
    per_token = v01.kv_bytes_per_token(2)
    assert decode_step_bytes(v01, 1, 999, 0, 2) == 1000 * per_token
    assert decode_step_bytes(v01, 1, 32767, 0, 2) == 4096 * per_token
    # beyond the window the attention term grows linearly, not quadratically
    attention = prefill_flops(v01, 1, 8192) - 2 * 8192 * v01.linear_params
    assert attention == pytest.approx(4 * 32 * 128 * 32 * (4096**2 / 2 + 4096 * 4096))
    # Qwen1.5-MoE names a window but switches it off
    assert Shape.from_config(_config(repo, "qwen1.5-moe-a2.7b")).windowed_layers == 0


def test_layer_types_name_the_windowed_layers(repo):
    config = {
        **_config(repo, "gemma-2-9b"),
        "layer_types": ["sliding_attention", "full_attention"] * 21,
    }
    gemma = Shape.from_config(config)
    assert (gemma.sliding_window, gemma.windowed_layers) == (4096, 21)
    per_layer_token = 2 * 8 * 256 * 2
    assert gemma.kv_bytes(10_000, 2) == per_layer_token * (21 * 10_000 + 21 * 4096)


def test_a_config_without_intermediate_size_needs_the_counted_weights(repo):
    opt = _config(repo, "opt-6.7b")
    with pytest.raises(KeyError):
        Shape.from_config(opt)
    shape = Shape.from_config(opt, counted=6_000_000_000)
    assert shape.linear_params == 6_000_000_000


def test_the_sliding_window_a_config_uses(repo):
    from llmbench.measure.efficiency import config_sliding_window as sliding_window

    assert sliding_window({"model_type": "mistral", "sliding_window": 4096}) == 4096
    assert sliding_window({"model_type": "mistral", "sliding_window": None}) is None
    off = {"model_type": "qwen2_moe", "sliding_window": 32768, "use_sliding_window": False}
    assert sliding_window(off) is None
    assert sliding_window({"model_type": "qwen2", "sliding_window": 131072}) is None  # default
    assert sliding_window({"model_type": "qwen2", "sliding_window": 4096,
                           "use_sliding_window": True}) == 4096  # fmt: skip
    # a missing key is the config class's default (a null key: no window)
    assert sliding_window({"model_type": "mistral"}) == 4096
    assert sliding_window({"model_type": "qwen3", "sliding_window": 4096}) is None
    assert sliding_window({"model_type": "llama"}) is None
    # Shape (MBU floor) and the memory model read one rule
    qwen = {**json.loads((repo / "config/models/qwen2.5-7b.json").read_text())}
    qwen.pop("use_sliding_window", None)
    assert Shape.from_config(qwen).sliding_window is None
