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


@pytest.mark.parametrize(("hidden", "std", "threshold"), [(4096, 0.02, 6.0), (16384, 0.05, 1.0)])
def test_the_outlier_integral_has_converged(hidden, std, threshold):
    # outliers.Z_LIMIT's claim: 4000 steps over +-10 agree with 80,000 over +-40
    import math

    from llmbench.predict import outliers

    sigma = math.sqrt(hidden) * std
    width = 80.0 / 80_000
    fine = 0.0
    for i in range(80_000):
        z = -40.0 + (i + 0.5) * width
        silu = abs(sigma * z / (1.0 + math.exp(-sigma * z)))
        if silu > 0.0:
            tail = math.erfc(threshold / (silu * sigma) / math.sqrt(2.0))
            fine += math.exp(-z * z / 2.0) / math.sqrt(2.0 * math.pi) * tail * width
    coarse = outliers._down_proj_outlier_probability(hidden, std, threshold)
    assert coarse == pytest.approx(fine, rel=3e-8, abs=2e-8)


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
