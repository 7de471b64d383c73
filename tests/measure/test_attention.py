"""Attention: a forced SDPA backend, and the record of which backend PyTorch picked."""

import pytest
import torch
import torch.nn.functional as functional

from llmbench.measure import attention


def sdpa(q_len: int) -> torch.Tensor:
    query = torch.randn(1, 4, q_len, 16)
    key = value = torch.randn(1, 2, 8, 16)  # GQA: 4 query heads over 2 key/value heads
    return functional.scaled_dot_product_attention(
        query, key, value, attn_mask=None, is_causal=q_len > 1, scale=None, enable_gqa=True
    )


def test_choice_is_recorded_per_phase_and_the_function_restored():
    original = functional.scaled_dot_product_attention
    with attention.record_sdpa_choice(True) as chosen:
        expected = sdpa(8)
        sdpa(1)
    assert functional.scaled_dot_product_attention is original
    assert set(chosen) == {"prefill", "decode"}
    assert set(chosen.values()) <= set(attention.SDPA_BACKEND_NAMES.values())
    torch.testing.assert_close(sdpa(8).shape, expected.shape)


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_a_forced_backend_is_what_the_record_says(backend):
    with attention.sdpa_context(backend), attention.record_sdpa_choice(True) as chosen:
        sdpa(8)
    assert chosen == {"prefill": backend}


def test_disabled_records_nothing_and_patches_nothing():
    original = functional.scaled_dot_product_attention
    with attention.record_sdpa_choice(False) as chosen:
        assert functional.scaled_dot_product_attention is original
        sdpa(8)
    assert chosen == {}


def test_positional_arguments_are_not_guessed():
    query = torch.randn(1, 2, 4, 8)
    with attention.record_sdpa_choice(True) as chosen:
        functional.scaled_dot_product_attention(query, query, query, None)
    assert chosen["prefill"].startswith("unknown")
