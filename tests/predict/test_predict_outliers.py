"""llmbench.predict.outliers: LLM.int8 outlier columns of random-weight checkpoints, in theory
and against the outlier state the H100 reference prefills left."""

from __future__ import annotations

import pytest
from predict_fixtures import (
    MISTRAL,
    device0,
    granule,
    reference_rows,
)

from llmbench.predict import (
    CUBLAS_WORKSPACE_BYTES,
    Architecture,
    int8_outlier_fraction,
)


def test_int8_outlier_fraction_random_weights():
    arch = Architecture.from_config(MISTRAL)
    assert int8_outlier_fraction(arch, 4096, "q_proj") == 0.0
    assert 0.002 < int8_outlier_fraction(arch, 1, "down_proj") < 0.005
    assert 0.95 < int8_outlier_fraction(arch, 1024, "down_proj") < 0.99
    assert int8_outlier_fraction(arch, 8192, "down_proj") > 0.9999


def test_int8_outlier_state_matches_the_reference():
    arch = Architecture.from_config(MISTRAL)
    for path, result, c, _ in reference_rows():
        if c.quant != "int8" or result["status"] != "ok" or c.batch * c.seq != 1024:
            continue
        load = device0(result, "load", "allocated_bytes")
        left = device0(result, "prefill", "allocated_bytes") - load - CUBLAS_WORKSPACE_BYTES
        left -= granule(c.batch * c.seq * 8)
        measured = left / (32 * 8 * arch.shape.intermediate_size)  # int64 idx per layer
        predicted = int8_outlier_fraction(arch, 1024, "down_proj")
        assert measured == pytest.approx(predicted, abs=0.03), path
