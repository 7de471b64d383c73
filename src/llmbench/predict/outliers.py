"""LLM.int8 outlier columns of random-weight checkpoints: which fraction of a projection's
input columns reaches bitsandbytes' threshold (``llm_int8_threshold``, default
``INT8_THRESHOLD``) and is computed in 16-bit.

Imports ``llmbench.predict.architecture`` and ``llmbench.predict.constants``.
"""

from __future__ import annotations

import functools
import math

from llmbench.predict.architecture import Architecture
from llmbench.predict.constants import INT8_THRESHOLD

QUADRATURE_STEPS = 4000
"""Midpoint-rule steps of the integral over ``z`` in :func:`_down_proj_outlier_probability`."""

Z_LIMIT = 10.0
"""The integral runs over ``z`` in ``[-Z_LIMIT, Z_LIMIT]`` standard deviations of ``gate``.

Why these suffice: the Gaussian mass left out beyond ±10 is ``erfc(10/√2)`` = 1.5e-23 (the
integrand's other factor is at most 1), and the midpoint rule at step 20/4000 = 0.005 agreed
with 80,000 steps over ±40 to 1.3e-8 absolute and 2.4e-8 relative (where p > 1e-12), over
hidden sizes 64-16384, ``initializer_range`` 0.01-0.05 and thresholds 1-16
(tests/predict/test_predict_outliers.py holds two of them)."""


@functools.lru_cache(maxsize=64)
def _down_proj_outlier_probability(
    hidden_size: int, initializer_range: float, threshold: float = INT8_THRESHOLD
) -> float:
    """P(|silu(g) * u| >= threshold) for g, u ~ N(0, hidden * std^2) independent.

    In a random-weight checkpoint the input of ``down_proj`` is ``silu(gate) * up`` with
    ``gate = W_g x``, ``up = W_u x``, ``x`` the RMS-normalised hidden state (RMS 1, norm
    weight 1) and ``W ~ N(0, initializer_range^2)``: each is Gaussian with variance
    ``hidden * initializer_range^2`` (1.64 for a 4096-wide model at 0.02). The product is
    heavy-tailed enough that ~0.3 % of its entries reach the 6.0 threshold. Every other
    projection's input (normed hidden state, attention output) stays below it (P < 1e-8).
    """
    sigma = math.sqrt(hidden_size) * initializer_range
    steps, low, high = QUADRATURE_STEPS, -Z_LIMIT, Z_LIMIT
    width = (high - low) / steps
    probability = 0.0
    for i in range(steps):
        z = low + (i + 0.5) * width
        g = sigma * z
        silu = abs(g / (1.0 + math.exp(-g)))
        if silu > 0.0:
            # P(|u| >= threshold / silu)
            tail = math.erfc(threshold / (silu * sigma) / math.sqrt(2.0))
            probability += math.exp(-z * z / 2.0) / math.sqrt(2.0 * math.pi) * tail * width
    return probability


def int8_outlier_fraction(
    arch: Architecture, rows: int, projection: str, threshold: float = INT8_THRESHOLD
) -> float:
    """Fraction of a projection's input columns LLM.int8 treats as outliers for ``rows`` rows
    at ``threshold`` (> 0; at 0 bitsandbytes holds no outliers back and this is not asked).

    A column is an outlier column when ANY of its ``rows`` entries reaches the threshold:
    ``1 - (1 - p)^rows``. Only ``down_proj`` has non-negligible ``p`` (see
    ``_down_proj_outlier_probability``); its fraction is 97 % at 1024 rows (measured: 95 %,
    from the int8 outlier state left after the H100 reference prefills) and ~100 % beyond.
    This describes random-weight checkpoints; trained models have a few systematic outlier
    dimensions instead, so this is an upper bound for them.
    """
    if projection != "down_proj":
        return 0.0
    p = _down_proj_outlier_probability(arch.shape.hidden_size, arch.initializer_range, threshold)
    return 1.0 - (1.0 - p) ** rows
