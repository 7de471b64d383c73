"""The load phase: its plan (``plan_load``: the cell's device_map and max_memory reach
from_pretrained) and its count of the weights one token multiplies through, on tiny CPU models."""

import json
from pathlib import Path

import torch
import transformers

from llmbench.grid.spec import Cell
from llmbench.measure.efficiency import Shape
from llmbench.measure.phases.load import (
    expert_weights,
    matmul_params_per_token,
    plan_load,
    position_limit,
)
from llmbench.measure.phases.spec import CellSpec


def spec(cell: Cell) -> CellSpec:
    return CellSpec(
        cell=cell,
        settings={"device_map": "auto", "bnb_4bit_compute_dtype": "bfloat16"},
        measurement={},
        model_entry={"architecture": "config/models/tiny-llama.json"},
        base_dir=Path("/models/tiny-llama"),
        prequantized_dir=None,
        partial_path="/tmp/partial.json",
        spawned_at=0.0,
    )


def test_the_cells_device_map_and_max_memory_are_passed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cell = Cell(
        "tiny-llama", "none", "sdpa", "bfloat16", 1, 8, "eager", device_map="balanced_low_0"
    )
    capped = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, max_memory="60GiB")
    kwargs = plan_load(spec(cell), "cuda").kwargs
    assert kwargs["device_map"] == "balanced_low_0" and "max_memory" not in kwargs
    kwargs = plan_load(spec(capped), "cuda").kwargs
    assert kwargs["device_map"] == "auto"  # config: the config key
    assert kwargs["max_memory"] == {0: 60 * 2**30, 1: 60 * 2**30}
    single = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, device_map="single")
    assert plan_load(spec(single), "cuda").kwargs["device_map"] == {"": 0}
    assert plan_load(spec(cell), "cpu").kwargs["device_map"] == "cpu"


def _model(repo, name):
    config = json.loads((repo / f"config/models/{name}.json").read_text())
    auto = transformers.AutoConfig.for_model(
        **{k: v for k, v in config.items() if k != "architectures"}
    )
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(auto)
    return model, model.config.to_dict()


def test_a_llama_style_model_counts_what_the_config_formula_gives(repo):
    model, config = _model(repo, "tiny-mistral")
    assert matmul_params_per_token(model, config) == Shape.from_config(config).linear_params


def test_opt_counts_its_two_matrix_mlp(repo):
    model, config = _model(repo, "tiny-opt")
    h, ffn, layers, vocab = (
        config[k] for k in ("hidden_size", "ffn_dim", "num_hidden_layers", "vocab_size")
    )
    assert matmul_params_per_token(model, config) == layers * (4 * h * h + 2 * h * ffn) + h * vocab


def test_moe_counts_top_k_of_its_experts(repo):
    model, config = _model(repo, "tiny-qwen2moe")
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads_dim = config["num_attention_heads"] * (h // config["num_attention_heads"])
    kv_dim = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    attention = h * heads_dim + 2 * h * kv_dim + heads_dim * h
    shared = 3 * h * config["shared_expert_intermediate_size"] + h  # + its 1-wide gate
    router = h * config["num_experts"]
    routed = config["num_experts_per_tok"] * 3 * h * config["moe_intermediate_size"]
    expected = layers * (attention + shared + router + routed) + h * vocab
    assert matmul_params_per_token(model, config) == expected


def test_a_moe_model_names_its_routed_expert_weights_and_a_dense_one_none(repo):
    model, config = _model(repo, "tiny-qwen2moe")
    h, inter, experts = (
        config["hidden_size"],
        config["moe_intermediate_size"],
        config["num_experts"],
    )
    per_layer = experts * 3 * h * inter * next(model.parameters()).element_size()
    assert expert_weights(model, config) == (
        experts,
        config["num_experts_per_tok"],
        config["num_hidden_layers"] * per_layer,
    )
    dense, dense_config = _model(repo, "tiny-mistral")
    assert expert_weights(dense, dense_config) is None


def test_learned_positions_have_a_limit_and_rotary_ones_none(repo):
    opt, _ = _model(repo, "tiny-opt")
    assert position_limit(opt) == (2048, "model.decoder.embed_positions")
    mistral, _ = _model(repo, "tiny-mistral")
    assert position_limit(mistral) is None
