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
