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
    assert "requested nf4 but the model holds unquantized weights" in as_written["reason"]


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


def load_with(path, quant, compute_dtype="bfloat16", threshold=None):
    config = build_bnb_config(quant, compute_dtype, threshold)
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, device_map="cpu", quantization_config=config
    )


@pytest.mark.parametrize(
    "quant, expected",
    [
        ("nf4", ("nf4", False)),
        ("nf4-dq", ("nf4", True)),
        ("fp4", ("fp4", False)),
        ("fp4-dq", ("fp4", True)),
    ],
)
def test_4bit_config_names_the_type_and_double_quantization(quant, expected):
    kwargs = bnb_config_kwargs(quant, "float32")
    assert (kwargs["bnb_4bit_quant_type"], kwargs["bnb_4bit_use_double_quant"]) == expected
    assert kwargs["bnb_4bit_compute_dtype"] == "float32"
    config = build_bnb_config(quant, "float16")
    assert config.bnb_4bit_quant_type == expected[0]
    assert config.bnb_4bit_use_double_quant is expected[1]
    assert config.bnb_4bit_compute_dtype is torch.float16


def test_int8_config_passes_a_threshold_only_when_asked():
    assert bnb_config_kwargs("int8", "bfloat16") == {"load_in_8bit": True}
    assert bnb_config_kwargs("int8", "bfloat16", 0.0) == {
        "load_in_8bit": True,
        "llm_int8_threshold": 0.0,
    }
    assert build_bnb_config("int8", "bfloat16").llm_int8_threshold == 6.0
    assert build_bnb_config("int8", "bfloat16", 4.0).llm_int8_threshold == 4.0
    assert bnb_config_kwargs("none", "bfloat16", 4.0) is None


@pytest.mark.parametrize("quant", ["fp4", "fp4-dq"])
def test_fp4_is_really_fp4_and_not_nf4(checkpoint, quant):
    inspection = inspect_model(load_with(checkpoint, quant))
    assert inspection["bnb_4bit_quant_types"] == ["fp4"]
    assert inspection["bnb_4bit_double_quant"] == [quant == "fp4-dq"]
    check = check_quantization(quant, inspection, compute_dtype="bfloat16")
    assert check["passed"] and check["applied"] == quant, check
    wrong = check_quantization(quant.replace("fp4", "nf4"), inspection, compute_dtype="bfloat16")
    assert not wrong["passed"] and wrong["applied"] == quant
    assert f"holds {quant} weights" in wrong["reason"]


def test_fp4_weighs_what_nf4_weighs(checkpoint):
    for dq in ("", "-dq"):
        fp4 = inspect_model(load_with(checkpoint, f"fp4{dq}"))["weight_bytes_by_dtype"]
        nf4 = inspect_model(load_with(checkpoint, f"nf4{dq}"))["weight_bytes_by_dtype"]
        assert fp4 == nf4


@pytest.mark.parametrize("compute_dtype", ["float32", "float16", "bfloat16"])
def test_compute_dtype_is_read_from_the_layers_and_survives_a_forward(checkpoint, compute_dtype):
    model = load_with(checkpoint, "nf4", compute_dtype)
    inspection = inspect_model(model)
    assert inspection["bnb_4bit_compute_dtypes"] == [compute_dtype]
    check = check_quantization("nf4", inspection, compute_dtype=compute_dtype)
    assert check["passed"] and check["compute_dtype"]["found"] == [compute_dtype]
    with torch.inference_mode():
        model(torch.zeros(1, 4, dtype=torch.long))
    # bitsandbytes would switch a layer without a compute dtype to its input's on first use
    assert inspect_model(model)["bnb_4bit_compute_dtypes"] == [compute_dtype]


def test_a_compute_dtype_the_layers_do_not_hold_fails_the_check(checkpoint):
    inspection = inspect_model(load_with(checkpoint, "fp4", "bfloat16"))
    check = check_quantization("fp4", inspection, compute_dtype="float32")
    assert not check["passed"] and check["applied"] == "fp4"
    assert check["compute_dtype"] == {
        "requested": "float32",
        "found": ["bfloat16"],
        "passed": False,
    }
    assert "compute_dtype ['bfloat16'] where float32 was asked" in check["reason"]


def test_int8_threshold_is_read_from_the_layers(checkpoint):
    default = inspect_model(load_with(checkpoint, "int8"))
    assert default["bnb_int8_thresholds"] == [6.0]
    assert check_quantization("int8", default)["int8_threshold"]["passed"]
    assert not check_quantization("int8", default, int8_threshold=4.0)["passed"]
    four = inspect_model(load_with(checkpoint, "int8", threshold=4.0))
    assert four["bnb_int8_thresholds"] == [4.0]
    check = check_quantization("int8", four, int8_threshold=4.0)
    assert check["passed"] and "int8_threshold 4.0" in check["reason"]
    assert not check_quantization("int8", four)["passed"]  # default asked, 4.0 held


def _fake_inspection(**overrides):
    """An inspection as ``inspect_model`` writes it, for a model of 14 bitsandbytes layers."""
    inspection = {
        "modules": {"linear_4bit": 14, "linear_8bit": 0, "linear_unquantized": 1},
        "bnb_4bit_quant_types": ["nf4"],
        "bnb_4bit_double_quant": [False],
        "bnb_4bit_compute_dtypes": ["bfloat16"],
        "bnb_int8_thresholds": [],
    }
    return {**inspection, **overrides}


def test_layers_that_disagree_fail_the_check():
    mixed_types = _fake_inspection(bnb_4bit_quant_types=["fp4", "nf4"])
    assert check_quantization("nf4", mixed_types)["applied"] == "mixed-4bit"
    partly_nested = _fake_inspection(bnb_4bit_double_quant=[False, True])
    assert check_quantization("nf4-dq", partly_nested)["applied"] == "nf4"
    assert not check_quantization("nf4-dq", partly_nested)["passed"]
    two_dtypes = _fake_inspection(bnb_4bit_compute_dtypes=["bfloat16", "float32"])
    check = check_quantization("nf4", two_dtypes, compute_dtype="bfloat16")
    assert not check["passed"] and check["compute_dtype"]["found"] == ["bfloat16", "float32"]
    int8 = _fake_inspection(
        modules={"linear_4bit": 0, "linear_8bit": 14, "linear_unquantized": 1},
        bnb_int8_thresholds=[4.0, 6.0],
    )
    assert not check_quantization("int8", int8, int8_threshold=4.0)["passed"]


def test_settings_are_not_checked_where_no_config_was_passed():
    check = check_quantization("nf4-not-passed", _fake_inspection(), compute_dtype="float32")
    assert "compute_dtype" not in check and not check["config_passed"]
    assert "compute_dtype" not in check_quantization("none", _fake_inspection())
