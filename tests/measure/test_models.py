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
    assert choose(entry, out, nf4, quant="nf4", compute_dtype="bfloat16") == (
        str(nf4),
        "prequantized",
    )
    # A checkpoint quantized for another compute dtype or quant is not used: quantize on load.
    assert choose(entry, out, nf4, quant="nf4", compute_dtype="float16") == (str(out), "base")
    assert choose(entry, out, nf4, quant="nf4-dq", compute_dtype="bfloat16") == (str(out), "base")
    assert choose(entry, out, nf4, quant="nf4-not-passed", compute_dtype="bfloat16")[1] == "base"


def test_failed_prequantization_falls_back_to_quantizing_on_load(base, tmp_path):
    out, _ = base
    broken = tmp_path / "int8"
    write_json_atomic(broken / models.MANIFEST, {"status": "failed", "quantization": "int8"})
    assert (
        models.choose_checkpoint({}, out, broken, quant="int8", compute_dtype="bfloat16")[1]
        == "base"
    )


def test_pretrained_entries_load_their_own_path():
    entry = {"pretrained": "/models/my-llama"}
    assert models.choose_checkpoint(entry, None, None, quant="nf4", compute_dtype="bfloat16") == (
        "/models/my-llama",
        "pretrained",
    )


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
