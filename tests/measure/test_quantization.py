"""Quantization truth checks on real (tiny, CPU) bitsandbytes models."""

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig

from llmbench.measure.quantization import (
    bnb_config_kwargs,
    build_bnb_config,
    check_quantization,
    inspect_model,
)

CONFIG = MistralConfig(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(CONFIG, dtype=torch.bfloat16).save_pretrained(path)
    return path


def load(path, quant):
    config = build_bnb_config(quant, "bfloat16")
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, device_map="cpu", quantization_config=config
    )


def test_the_seed_case_2_as_written_builds_but_does_not_pass_the_config():
    assert bnb_config_kwargs("nf4-not-passed", "bfloat16") == bnb_config_kwargs("nf4", "bfloat16")


def test_unquantized_model_passes_none_and_fails_nf4_not_passed(checkpoint):
    inspection = inspect_model(load(checkpoint, "none"))
    assert inspection["modules"] == {"linear_4bit": 0, "linear_8bit": 0, "linear_unquantized": 15}
    # bf16 weights; the only float32 is the rotary embedding's inv_freq buffer.
    assert inspection["weight_bytes_by_dtype"]["float32"] <= 1024
    assert check_quantization("none", inspection)["passed"]
    as_written = check_quantization("nf4-not-passed", inspection)
    assert not as_written["passed"]
    assert as_written["applied"] == "none" and not as_written["config_passed"]
    assert "never passed" in as_written["reason"]


@pytest.mark.parametrize(
    "quant, layer_key, storage",
    [
        ("nf4", "linear_4bit", "uint8"),
        ("nf4-dq", "linear_4bit", "uint8"),
        ("int8", "linear_8bit", "int8"),
    ],
)
def test_bitsandbytes_layers_and_bytes_are_found(checkpoint, quant, layer_key, storage):
    inspection = inspect_model(load(checkpoint, quant))
    assert inspection["modules"][layer_key] == 14  # every linear but lm_head
    assert inspection["modules"]["linear_unquantized"] == 1
    assert inspection["weight_bytes_by_dtype"][storage] > 0
    check = check_quantization(quant, inspection)
    assert check["passed"], check
    assert not check_quantization("none", inspection)["passed"]


def test_nf4_bytes_include_block_absmax(checkpoint):
    inspection = inspect_model(load(checkpoint, "nf4"))
    quantized_params = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128)
    assert inspection["weight_bytes_by_dtype"]["uint8"] == quantized_params // 2
    # One float32 absmax per 64-element block, beside the packed weights.
    assert inspection["weight_bytes_by_dtype"]["float32"] >= quantized_params // 64 * 4
