"""Decode: greedy generation through the cache, warm-up, and the timed steps (fake model)."""

from types import SimpleNamespace

import pytest
import torch

from llmbench.grid.spec import Cell
from llmbench.measure.phases import decode, setup
from llmbench.measure.phases.generation import Generation, prefill_kwargs
from llmbench.measure.phases.load import Loaded

VOCAB = 7


class FakeModel:
    """Answers like a causal LM; counts its calls and fails on call ``fail_at``."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def forward(self, input_ids, past_key_values=None, use_cache=False, logits_to_keep=0):
        raise NotImplementedError  # only its signature is read

    def __call__(self, input_ids, **kwargs):
        self.calls.append(kwargs)
        if len(self.calls) == self.fail_at:
            raise RuntimeError("CUDA out of memory")
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], VOCAB)
        logits[..., 3] = 1.0
        return SimpleNamespace(logits=logits, past_key_values=len(self.calls))


def loaded(model):
    return Loaded(model, torch.zeros(2, 4, dtype=torch.long), facts=None, measure_started=0.0)


def test_generation_keeps_the_cache_and_picks_the_greedy_token():
    model = FakeModel()
    generation = Generation(model, torch.zeros(2, 4, dtype=torch.long), prefill_kwargs(model))
    generation.prefill()
    generation.step()
    assert model.calls[0] == {"use_cache": True, "logits_to_keep": 1}
    assert model.calls[1]["past_key_values"] == 1
    assert generation.token.tolist() == [[3], [3]]
    assert generation.kv_dtype() is None  # this cache exposes no layers


def test_the_decode_choice_is_handed_over_before_a_later_warm_step_fails():
    choices = []
    with pytest.raises(RuntimeError, match="out of memory"):
        decode.warm_up(loaded(FakeModel(fail_at=3)), {}, 3, True, choices.append)
    assert choices == [{}]  # the fake calls no SDPA: an empty choice, but handed over


def test_no_warm_up_tokens_no_model_call():
    model = FakeModel()
    decode.warm_up(loaded(model), {}, 0, True, pytest.fail)
    decode.warm_up(loaded(model), {}, 2, False, pytest.fail)  # no sdpa: nothing to hand over
    assert len(model.calls) == 3


def test_timed_decode_counts_steps_after_the_first_token():
    session = setup.open_session(torch, "cpu", [], None)
    model = FakeModel()
    result = decode.time_decode(
        loaded(model),
        {},
        {"decode_tokens": 5},
        Cell("m", "none", "eager", "float16", 2, 4),
        session,
    )
    assert result.steps == 4 and len(model.calls) == 5
    assert result.kv_dtype == "float16"  # the cell's dtype where the cache does not say
    assert set(session.tracker.phases) == {"decode"} and "decode" in session.energy.readings
