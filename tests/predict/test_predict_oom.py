"""ok / oom of a cell from its allocator events on a capacity (llmbench.predict.oom)."""

from __future__ import annotations

import json

from llmbench import REPO_ROOT
from llmbench.predict.allocator import Alloc, Free
from llmbench.predict.oom import capacity_from_record, simulate_events

MIB = 2**20
PROBES = REPO_ROOT / "results/reference/h100/frontier/frontier/probes/mistral-7b-v0.3"


def test_cached_segments_are_released_before_an_oom():
    events = [Alloc(1, 60 * MIB), Free(1), Alloc(2, 80 * MIB), Alloc(3, 30 * MIB)]
    marks = {"load": 0, "prefill": 2, "decode": 3}
    fits = simulate_events(events[:3], marks, capacity=100 * MIB)
    assert fits.status == "ok" and fits.peak_reserved == 80 * MIB  # the 60 MiB went back
    fails = simulate_events(events, marks, capacity=100 * MIB)
    assert fails.status == "oom" and fails.phase == "decode"
    assert fails.oom_request == 30 * MIB and fails.allocated_at_oom == 80 * MIB
    assert fails.phase_peaks["load"] == (60 * MIB, 60 * MIB)
    assert simulate_events(events, marks, capacity=None).status == "ok"


def test_capacity_is_torch_total_less_the_memory_outside_the_allocator():
    eager = json.loads((PROBES / "none/eager/bfloat16/b1_s11520.json").read_text())
    sdpa = json.loads((PROBES / "none/sdpa/bfloat16/b1_s32768.json").read_text())
    assert capacity_from_record(eager) == 85_017_493_504 - 720_175_104
    assert capacity_from_record(sdpa) == 85_017_493_504 - 728_563_712


def test_a_cell_is_simulated_in_its_own_allocator_mode():
    from llmbench.grid.spec import Cell
    from llmbench.predict.oom import allocator_config

    default = Cell("mistral-7b-v0.3", "none", "eager", "bfloat16", 2, 8192)
    expandable = Cell(
        "mistral-7b-v0.3", "none", "eager", "bfloat16", 2, 8192, allocator="expandable_segments"
    )
    assert not allocator_config(default).expandable_segments
    assert allocator_config(expandable).expandable_segments
    # the same events: a 60 MiB block freed, then 70 MiB asked on 100 MiB. The default mode
    # must find a new 70 MiB segment (the cached 60 MiB one is released first, so it fits);
    # a freed-but-mapped expandable segment grows in place.
    events = [Alloc(1, 60 * MIB), Free(1), Alloc(2, 70 * MIB)]
    marks = {"load": 0}
    for cell in (default, expandable):
        result = simulate_events(events, marks, 100 * MIB, allocator_config(cell))
        assert result.status == "ok" and result.peak_allocated == 70 * MIB
