"""Memory tracker sanity: a tensor of known size shows up within ±10 %."""

import pytest
import torch

from llmbench import GIB
from llmbench.measure.failures import MemoryBudgetExceeded
from llmbench.measure.memory import MemoryTracker, reset_host_peak_rss

KNOWN_BYTES = 256 * 2**20


def test_host_peak_rss_sees_a_known_allocation():
    if not reset_host_peak_rss():
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    tracker = MemoryTracker("cpu")
    tracker.mark_before_load()
    with tracker.phase("prefill"):
        tensor = torch.ones(KNOWN_BYTES, dtype=torch.uint8)  # ones: pages really touched
        del tensor
    host = tracker.phases["prefill"]["host"]
    growth = host["peak_rss_bytes"] - tracker.to_dict()["host_rss_before_load_bytes"]
    assert host["peak_is_phase_local"]
    assert growth == pytest.approx(KNOWN_BYTES, rel=0.10)


def test_cpu_budget_is_checked_after_the_phase():
    if not reset_host_peak_rss():
        pytest.skip("peak RSS cannot be reset here")
    tracker = MemoryTracker("cpu", budget_gib=64 * 2**20 / GIB)
    tracker.mark_before_load()
    with pytest.raises(MemoryBudgetExceeded, match="memory budget exceeded in prefill"):
        with tracker.phase("prefill"):
            tensor = torch.ones(KNOWN_BYTES, dtype=torch.uint8)
            del tensor
    assert "prefill" in tracker.phases  # the record is kept for the failed phase


def test_phase_record_is_kept_when_the_body_raises():
    tracker = MemoryTracker("cpu")
    with pytest.raises(RuntimeError):
        with tracker.phase("load"):
            raise RuntimeError("boom")
    assert tracker.phases["load"]["devices"] == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_allocated_and_peak_see_a_known_tensor():
    tracker = MemoryTracker("cuda")
    before = torch.cuda.memory_allocated(0)
    with tracker.phase("prefill"):
        tensor = torch.empty(KNOWN_BYTES, dtype=torch.uint8, device="cuda:0")
        del tensor
    device = tracker.phases["prefill"]["devices"][0]
    assert device["peak_allocated_bytes"] - before == pytest.approx(KNOWN_BYTES, rel=0.10)
    assert device["allocated_bytes"] == pytest.approx(before, abs=2**20)
    assert device["peak_reserved_bytes"] >= device["peak_allocated_bytes"]
