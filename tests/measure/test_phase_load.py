"""The load phase's count of the weights one token multiplies through, on tiny CPU models."""

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llmbench.measure.efficiency import Shape  # noqa: E402
from llmbench.measure.phases.load import matmul_params_per_token  # noqa: E402


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
