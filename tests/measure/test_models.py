"""Random-weight checkpoints, pre-quantized copies, and what a cell loads."""

import json

import pytest
import torch

from llmbench.measure import models
from llmbench.record.cell import write_json_atomic


@pytest.fixture(scope="module")
def base(tmp_path_factory, repo):
    out = tmp_path_factory.mktemp("ckpt") / "base"
    manifest = models.materialize(
        repo / "config/models/tiny-mistral.json", out, seed=0, device="cpu"
    )
    return out, manifest


def test_materialize_writes_safetensors_and_the_manifest_last(base, repo):
    out, manifest = base
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / models.MANIFEST).read_text()) == manifest
    architecture = json.loads((repo / "config/models/tiny-mistral.json").read_text())
    config = json.loads((out / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size"):
        assert config[key] == architecture[key]
    assert manifest["dtype"] == "bfloat16" and manifest["n_parameters"] > 0


def test_materialize_is_deterministic_for_a_seed(base, tmp_path, repo):
    from safetensors.torch import load_file

    out, _ = base
    again = tmp_path / "again"
    models.materialize(repo / "config/models/tiny-mistral.json", again, seed=0, device="cpu")
    first, second = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_prequantized_checkpoint_is_chosen_only_when_it_matches(base, tmp_path):
    out, _ = base
    nf4 = tmp_path / "nf4"
    manifest = models.prequantize(out, nf4, quant="nf4", compute_dtype="bfloat16", device="cpu")
    assert manifest["status"] == "ok"
    entry = {"architecture": "x.json"}
    choose = models.choose_checkpoint
    assert choose(entry, out, nf4, quant="nf4") == (str(nf4), "prequantized")
    # A checkpoint quantized for another quant is not used: quantize on load.
    assert choose(entry, out, nf4, quant="nf4-dq") == (str(out), "base")
    assert choose(entry, out, nf4, quant="fp4") == (str(out), "base")
    assert choose(entry, out, nf4, quant="nf4-not-passed")[1] == "base"


def test_failed_prequantization_falls_back_to_quantizing_on_load(base, tmp_path):
    out, _ = base
    broken = tmp_path / "int8"
    write_json_atomic(broken / models.MANIFEST, {"status": "failed", "quantization": "int8"})
    assert models.choose_checkpoint({}, out, broken, quant="int8")[1] == "base"


def test_pretrained_entries_load_their_own_path():
    entry = {"pretrained": "/models/my-llama"}
    assert models.choose_checkpoint(entry, None, None, quant="nf4") == (
        "/models/my-llama",
        "pretrained",
    )


def _load_prequantized(directory, quant, compute_dtype, *, override):
    from llmbench.measure.quantization import inspect_model

    kwargs = models.load_kwargs(
        quant=quant,
        attn_implementation="sdpa",
        dtype="bfloat16",
        device_map="cpu",
        compute_dtype=compute_dtype,
    )
    config = models.loading_config(str(directory), kwargs["quantization_config"])
    if override:
        kwargs["config"] = config
    model, _ = models.load(str(directory), kwargs)
    return inspect_model(model), config


def test_a_prequantized_checkpoint_keeps_its_saved_compute_dtype_unless_overridden(base, tmp_path):
    """transformers 5.17 loads a serialized bitsandbytes checkpoint with the config it saved,
    ignoring the passed one's compute dtype; ``loading_config`` puts the cell's in."""
    out, _ = base
    fp4 = tmp_path / "fp4"
    models.prequantize(out, fp4, quant="fp4", compute_dtype="bfloat16", device="cpu")
    ignored, _ = _load_prequantized(fp4, "fp4", "float32", override=False)
    assert ignored["bnb_4bit_compute_dtypes"] == ["bfloat16"]
    held, config = _load_prequantized(fp4, "fp4", "float32", override=True)
    assert held["bnb_4bit_compute_dtypes"] == ["float32"]
    assert held["bnb_4bit_quant_types"] == ["fp4"] and held["bnb_4bit_double_quant"] == [False]
    described = models.describe_kwargs({"config": config})["config"]["quantization_config"]
    assert described["bnb_4bit_compute_dtype"] == "float32"
    assert described["bnb_4bit_quant_type"] == "fp4"


def test_no_loading_config_for_unquantized_checkpoints(base):
    out, _ = base
    quantization_config = models.load_kwargs(
        quant="nf4",
        attn_implementation="sdpa",
        dtype="bfloat16",
        device_map="cpu",
        compute_dtype="bfloat16",
    )["quantization_config"]
    assert models.loading_config(str(out), quantization_config) is None
    assert models.loading_config("some/hub-id", quantization_config) is None
    assert models.loading_config(str(out), None) is None


def test_load_kwargs_pass_the_config_except_as_written():
    kwargs = models.load_kwargs(
        quant="nf4",
        attn_implementation="sdpa",
        dtype="bfloat16",
        device_map="auto",
        compute_dtype="bfloat16",
    )
    assert kwargs["quantization_config"].bnb_4bit_quant_type == "nf4"
    assert kwargs["dtype"] is torch.bfloat16 and kwargs["attn_implementation"] == "sdpa"
    as_written = models.load_kwargs(
        quant="nf4-not-passed",
        attn_implementation="sdpa",
        dtype="float32",
        device_map="auto",
        compute_dtype="bfloat16",
    )
    assert "quantization_config" not in as_written
    described = models.describe_kwargs(kwargs)
    assert described["dtype"] == "bfloat16" and described["quantization_config"]["load_in_4bit"]
    int8 = models.load_kwargs(
        quant="int8",
        attn_implementation="sdpa",
        dtype="bfloat16",
        device_map="auto",
        compute_dtype="bfloat16",
        llm_int8_threshold=4.0,
    )
    assert int8["quantization_config"].llm_int8_threshold == 4.0


def test_device_map_resolution():
    assert models.resolve_device_map("auto", "cpu") == "cpu"
    assert models.resolve_device_map("single", "cuda") == {"": 0}
    assert models.resolve_device_map("balanced", "cuda") == "balanced"


def test_placement_summarises_layer_ranges_per_device():
    class Split(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(4, dtype=torch.float32))
            self.hf_device_map = {
                "model.embed_tokens": 0,
                **{f"model.layers.{i}": 0 for i in range(16)},
                **{f"model.layers.{i}": 1 for i in range(16, 32)},
                "model.norm": 1,
                "lm_head": 1,
            }

    placed = models.placement(Split())
    assert placed["parameter_bytes_per_device"] == {"cpu": 16}
    assert placed["hf_device_map_modules"] == {
        "cuda:0": ["model.embed_tokens", "model.layers.0-15"],
        "cuda:1": ["lm_head", "model.layers.16-31", "model.norm"],
    }


def test_max_memory_caps_every_visible_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert models.resolve_max_memory(60 * 2**30, "cuda") == {0: 60 * 2**30, 1: 60 * 2**30}
    assert models.resolve_max_memory(None, "cuda") is None
    assert models.resolve_max_memory(60 * 2**30, "cpu") is None
