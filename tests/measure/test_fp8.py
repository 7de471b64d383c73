"""torchao fp8 (``llmbench.measure.fp8``): the config each fp8 cell passes, the check of what
the loaded model holds and of the matmul that ran, and the cell without torchao."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from llmbench.grid.spec import Cell
from llmbench.measure import fp8
from llmbench.measure.phases import setup

STORED = {
    "linear_float8": 14,
    "linear_unquantized": ["lm_head"],
    "qdata_dtypes": ["float8_e4m3fn"],
    "scale_dtypes": ["float32"],
    "scale_per_row": [True],
    "activation_quantized": [False],
    "lm_head_dtype": "bfloat16",
}
DYNAMIC = {**STORED, "activation_quantized": [True]}


def _without_torchao(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )


def test_weight_only_passes_on_dequantized_gemms_and_fails_on_scaled_mm():
    ran = {"ops": {"aten::mm": 15, "aten::matmul": 16}, "gemm_kernels": ["sm90_gemm"]}
    check = fp8.check_fp8("fp8", STORED, ran)
    assert check["passed"] and check["matmul"]["ran"] == ["aten::mm"], check["reason"]
    scaled = {"ops": {"aten::mm": 15, "aten::_scaled_mm": 14}, "gemm_kernels": []}
    check = fp8.check_fp8("fp8", STORED, scaled)
    assert not check["passed"] and "['aten::_scaled_mm'] ran in a weight-only" in check["reason"]


@pytest.mark.parametrize("op", fp8.FP8_MATMUL_OPS)
def test_dynamic_needs_one_fp8_matmul_per_float8_layer(op):
    assert fp8.check_fp8("fp8-dyn", DYNAMIC, {"ops": {op: 14}, "gemm_kernels": []})["passed"]
    few = fp8.check_fp8("fp8-dyn", DYNAMIC, {"ops": {op: 13, "aten::mm": 1}, "gemm_kernels": []})
    assert not few["passed"] and "13 calls" in few["reason"]


def test_what_the_weights_hold_is_checked_before_any_profile():
    assert fp8.check_fp8("fp8", STORED, None)["matmul"]["profiled"] is False
    for bad, words in (
        ({"qdata_dtypes": ["float8_e5m2"]}, "not float8_e4m3fn"),
        ({"scale_per_row": [False, True]}, "not float32 (out, 1)"),
        ({"lm_head_dtype": "float8"}, "lm_head is float8"),
        ({"activation_quantized": [True]}, "activation quantization [True]"),
    ):
        check = fp8.check_fp8("fp8", {**STORED, **bad}, None)
        assert not check["passed"] and words in check["reason"]
    plain = {**STORED, "linear_float8": 0, "qdata_dtypes": [], "scale_dtypes": []}
    plain["scale_per_row"] = plain["activation_quantized"] = []
    check = fp8.check_fp8("fp8-dyn", plain, None)
    assert check["applied"] == "none" and "no Linear holds" in check["reason"]


def test_without_torchao_a_cuda_fp8_cell_is_unavailable_not_a_crash(monkeypatch):
    _without_torchao(monkeypatch)
    assert "torchao is not installed" in fp8.torchao_missing_reason()
    hopper = SimpleNamespace(cuda=SimpleNamespace(get_device_capability=lambda _: (9, 0)))
    with pytest.raises(setup.Cancelled) as cancelled:
        setup.check_supported(Cell("m", "fp8-dyn", "sdpa", "bfloat16", 1, 8), "cuda", hopper)
    assert cancelled.value.status == "unavailable"
    assert "requirements/extras.txt" in cancelled.value.reason
    setup.check_supported(Cell("m", "none", "sdpa", "bfloat16", 1, 8), "cuda", hopper)


def test_an_older_gpu_is_unsupported_whether_or_not_torchao_is_there(monkeypatch):
    _without_torchao(monkeypatch)
    ampere = SimpleNamespace(cuda=SimpleNamespace(get_device_capability=lambda _: (8, 0)))
    with pytest.raises(setup.Cancelled) as cancelled:
        setup.check_supported(Cell("m", "fp8", "sdpa", "bfloat16", 1, 8), "cuda", ampere)
    assert cancelled.value.status == "unsupported" and "this GPU is 8.0" in cancelled.value.reason


def test_the_configs_are_torchao_float8_per_row():
    pytest.importorskip("torchao")
    from torchao.quantization import PerRow

    weight_only = fp8.build_torchao_config("fp8").quant_type
    dynamic = fp8.build_torchao_config("fp8-dyn").quant_type
    assert type(weight_only).__name__ == "Float8WeightOnlyConfig"
    assert isinstance(weight_only.granularity, PerRow)
    assert type(dynamic).__name__ == "Float8DynamicActivationFloat8WeightConfig"
    assert all(isinstance(g, PerRow) for g in dynamic.granularity)
    assert fp8.build_torchao_config("nf4") is None


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, repo):
    from llmbench.measure import models

    path = tmp_path_factory.mktemp("tiny-mistral")
    models.materialize(repo / "config/models/tiny-mistral.json", path, seed=1, device="cpu")
    return path


def test_a_tiny_model_quantized_on_load_holds_float8_weights(pretrained, repo):
    pytest.importorskip("torchao")
    from llmbench.measure import models, quantization
    from llmbench.predict import Architecture, weight_breakdown

    kwargs = models.load_kwargs(
        quant="fp8",
        attn_implementation="sdpa",
        dtype="bfloat16",
        device_map="cpu",
        compute_dtype="bfloat16",
    )
    model, _ = models.load(str(pretrained), kwargs)
    inspection = fp8.inspect_fp8(model)
    layers = model.config.num_hidden_layers * 7  # q, k, v, o, gate, up, down
    assert inspection["linear_float8"] == layers
    assert inspection["linear_unquantized"] == ["lm_head"]
    assert inspection["qdata_dtypes"] == ["float8_e4m3fn"]
    assert inspection["scale_dtypes"] == ["float32"] and inspection["scale_per_row"] == [True]
    assert inspection["activation_quantized"] == [False]
    assert fp8.check_fp8("fp8", inspection, None)["passed"]
    # the bytes it holds by dtype are the predictor's (qdata 1 byte a weight, float32 scales)
    held = quantization.inspect_model(model)["weight_bytes_by_dtype"]
    config = models.architecture_config(repo / "config/models/tiny-mistral.json")
    predicted = weight_breakdown(Architecture.from_config(config), "fp8", "bfloat16").by_dtype
    assert held == predicted
    # placement counts the bytes stored, not the wrapper's bf16 itemsize
    placed = models.placement(model)["parameter_bytes_per_device"]
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())  # rotary inv_freq
    assert placed == {"cpu": sum(held.values()) - buffers}
    # what one profiled forward ran: the dequantized weights' bf16 GEMMs, no fp8 matmul
    import torch

    ran = fp8.profile_matmul(model, torch.randint(0, 100, (2, 16)), torch)
    assert ran["ops"]["aten::mm"] >= layers and not set(fp8.FP8_MATMUL_OPS) & set(ran["ops"])
    assert fp8.check_fp8("fp8", inspection, ran)["passed"]
    assert not fp8.check_fp8("fp8-dyn", {**inspection, "activation_quantized": [True]}, ran)[
        "passed"
    ]
