"""Static-cache decode on a tiny CPU model: the same tokens as DynamicCache decode, a rewind
that undoes one step exactly, and the graph truth check's arithmetic (graph capture itself
needs CUDA: ``decode_mode: graph`` cells on the H200 reference exercise it)."""

import pytest
import torch

from llmbench.measure import models
from llmbench.measure.phases.generation import Generation
from llmbench.measure.phases.static import (
    StaticGeneration,
    logits_agree,
    max_rel_diff,
    token_mismatches,
)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny(request, tmp_path_factory, repo):
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("tiny")
    models.materialize(repo / "config/models/tiny-mistral.json", path, seed=1, device="cpu")
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation=request.param
    ).eval()
    return model, torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.manual_seed(0))


def test_static_cache_decode_picks_the_tokens_dynamic_cache_decode_picks(tiny):
    model, ids = tiny
    with torch.inference_mode():
        dynamic = Generation(model, ids, {"logits_to_keep": 1})
        static = StaticGeneration(model, ids, {"logits_to_keep": 1}, 6)
        dynamic.prefill()
        static.prefill()
        for _ in range(5):
            dynamic.step()
            static.step()
            assert static.token.tolist() == dynamic.token.tolist()
    assert static.kv_dtype() == "float32"
    assert int(static.cache.layers[0].cumulative_length) == 12 + 5  # prompt + 5 new: full


def test_a_rewound_step_repeats_exactly(tiny):
    model, ids = tiny
    with torch.inference_mode():
        generation = StaticGeneration(model, ids, {"logits_to_keep": 1}, 4, keep_logits=True)
        generation.prefill()
        generation.step()
        token = generation.token.clone()
        mask = generation.mask.clone()
        generation.eager_step()
        first = generation.last_logits.clone()
        generation.rewind(token)
        assert torch.equal(generation.mask, mask)
        assert int(generation.cache.layers[0].cumulative_length) == 13
        generation.eager_step()
        assert torch.equal(generation.last_logits, first)


def test_capture_needs_cuda(tiny):
    model, ids = tiny
    with pytest.raises(RuntimeError, match="CUDA"):
        StaticGeneration(model, ids, {}, 2).capture(1)


def steps(*rows):
    return [torch.tensor(row, dtype=torch.float32) for row in rows]


def test_relative_difference_is_against_each_steps_largest_logit():
    reference = steps([[4.0, 1.0]], [[2.0, 0.0]])
    candidate = steps([[4.0, 1.1]], [[2.0, 0.2]])
    worst_abs, worst_rel = max_rel_diff(reference, candidate)
    assert worst_abs == pytest.approx(0.2)
    assert worst_rel == pytest.approx(0.1)
    with pytest.raises(ValueError):
        max_rel_diff(reference, candidate[:1])


def test_only_decisive_token_flips_count():
    reference = steps([[1.00, 0.99, 0.0], [3.0, 0.0, 0.0]])
    candidate = steps([[0.99, 1.00, 0.0], [0.0, 3.0, 0.0]])
    assert token_mismatches(reference, candidate, margin=0.1) == (2, 1)


def test_graph_within_tolerance_passes_and_beyond_fails_with_the_numbers():
    reference = steps([[5.0, 1.0, 0.0]])
    same = logits_agree(reference, reference, steps([[5.01, 1.0, 0.0]]), 1.6e-2)
    assert same["passed"] and same["greedy_tokens_differ"] == 0
    off = logits_agree(reference, reference, steps([[5.0, 1.5, 0.0]]), 1.6e-2)
    assert not off["passed"] and "0.1" in off["reason"]
    flipped = logits_agree(reference, reference, steps([[0.0, 5.0, 0.0]]), 1.6e-2)
    assert not flipped["passed"] and flipped["greedy_tokens_differ_beyond_margin"] == 1


def test_eager_noise_widens_the_tolerance():
    reference = steps([[5.0, 1.0, 0.0]])
    repeat = steps([[5.0, 1.1, 0.0]])  # eager differs from itself by 0.02 of 5
    record = logits_agree(reference, repeat, steps([[5.0, 1.15, 0.0]]), 1.6e-2)
    assert record["tolerance_rel"] == pytest.approx(0.04)
    assert record["passed"]
