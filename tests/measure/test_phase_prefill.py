"""Prefill: what the memory pass adds to the attention check."""

from llmbench.measure.phases.prefill import PrefillPass


def test_the_pass_proves_the_implementation_by_one_call_per_layer():
    found = PrefillPass(attention_calls=2, sdpa_choice={"prefill": "math"}, logits_dtype="float32")
    assert found.evidence(2, True) == {
        "calls_in_one_forward": 2,
        "expected_calls": 2,
        "passed": True,
        "sdpa_backend_chosen": {"prefill": "math"},
    }
    assert found.evidence(3, True)["passed"] is False
    assert found.evidence(2, False)["passed"] is False


def test_an_uncountable_dispatch_does_not_fail_the_check():
    assert PrefillPass(-1, None, "bfloat16").evidence(32, True)["passed"] is True
