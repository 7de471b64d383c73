"""llmbench.predict.replay: the terms are named fields that sum to each phase's peak."""

from __future__ import annotations

from dataclasses import fields

from predict_fixtures import MISTRAL, cell

from llmbench import predict
from llmbench.predict import (
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    TERM_NAMES,
    Terms,
)


def test_terms_are_named_fields_that_sum_to_the_peak():
    prediction = predict.predict(MISTRAL, cell(quant="int8", attn="eager", batch=1, seq=8192))
    assert {f.name for f in fields(Terms)} == set(TERM_NAMES)
    for phase in prediction.phases:
        terms = phase.peak.to_dict()
        assert all(isinstance(v, int) and v >= 0 for v in terms.values())
        assert sum(terms.values()) == phase.peak_allocated == phase.peak.total
        assert phase.stage
        assert phase.peak.weights == prediction.weights.allocated
    assert prediction.peak_allocated == max(p.peak_allocated for p in prediction.phases)
    assert prediction.dominant_term() == "attention_scores"
    assert prediction.device_need == (
        prediction.peak_allocated + prediction.allocator_slack + CUDA_CONTEXT_BYTES
    )
    assert prediction.prefill.peak.cuda_workspace == CUBLAS_WORKSPACE_BYTES
    assert prediction.load.peak.cuda_workspace == 0


def test_the_running_total_is_the_sum_of_the_live_tensors():
    """_Replay keeps its total as tensors come and go; after every step it must equal the sum
    of what is live, including a named handle allocated again (it replaces its tensor)."""
    from llmbench.predict.replay import _Replay

    r = _Replay()
    steps = [
        ("alloc", "weights", 10_000, "weights"),
        ("alloc", "inputs", 700, None),
        ("alloc", "hidden_states", 3_000, "h"),
        ("free", "t1"),
        ("alloc", "hidden_states", 5_000, "h"),  # the same handle, a larger tensor
        ("free", "missing", None),  # unknown and None handles free nothing
        ("alloc", "logits", 1_000, None),
        ("free", "h"),
    ]
    for step in steps:
        if step[0] == "alloc":
            r.alloc(step[1], step[2], name=step[3])
        else:
            r.free(*step[1:])
        assert r.total == sum(nbytes for _, nbytes in r.live.values())
    assert r.best_total == 10_240 + 5_120 + 1_024  # weights, h (replaced), logits: 512 B granules
    assert r.peak().total == r.best_total
