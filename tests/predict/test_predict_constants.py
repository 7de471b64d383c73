"""llmbench.predict.constants: the measured constants hold in every committed H100 reference
cell, and the defaults that mirror a setting equal config/config.yaml's."""

from __future__ import annotations

from pathlib import Path

import yaml
from predict_fixtures import REFERENCE, granule, load_reference

from llmbench.predict import (
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    constants,
)

REPO = Path(__file__).resolve().parents[2]


def test_measured_constants():
    for path in REFERENCE:
        result, c = load_reference(path)
        load = result["memory"]["phases"]["load"]["devices"][0]
        # CUDA context: NVML per-process used - torch reserved.
        assert load["nvml_process_used_bytes"] - load["reserved_bytes"] == CUDA_CONTEXT_BYTES
        if result["status"] == "ok" and c.quant != "int8":
            prefill = result["memory"]["phases"]["prefill"]["devices"][0]
            leftover = prefill["allocated_bytes"] - load["allocated_bytes"]
            assert leftover - granule(c.batch * c.seq * 8) == CUBLAS_WORKSPACE_BYTES, path


def test_decode_defaults_are_the_configs_measurement_defaults():
    # a caller that passes no decode_tokens / decode_warmup_tokens gets what a run does
    measurement = yaml.safe_load((REPO / "config/config.yaml").read_text())["measurement"]
    assert constants.DECODE_TOKENS == measurement["decode_tokens"]
    assert constants.DECODE_WARMUP_TOKENS == measurement["decode_warmup_tokens"]
