"""llmbench.predict.fit: the fit rule classifies the committed H100 reference cells and
frontier probes, and its reserved need bounds every measured peak reserved."""

from __future__ import annotations

import pytest
from predict_fixtures import (
    PROBES,
    REFERENCE,
    device0,
    reference_rows,
)


@pytest.mark.parametrize("paths", [REFERENCE, PROBES], ids=["grids", "frontier probes"])
def test_fit_rule_classifies_the_reference(paths):
    for path, result, _, prediction in reference_rows(paths):
        capacity = result["environment"]["gpus"][0]["total_memory_bytes"]
        verdict = prediction.fit_verdict(capacity)
        assert verdict == "maybe" or (verdict == "yes") == (result["status"] != "oom"), path
        if result["status"] in ("ok", "check_failed"):
            reserved = device0(result, "prefill", "peak_reserved_bytes")
            assert prediction.reserved_need >= reserved, path
