"""A cell's ordered allocator events (llmbench.predict.trace.events): the worker's phases in
order, every request freed at most once, the load as the recorded H200 runs made it."""

from __future__ import annotations

import json
import lzma

import pytest

from llmbench import REPO_ROOT
from llmbench.grid.spec import Cell
from llmbench.predict.allocator import Alloc, Free, simulate

pytest.importorskip("torch")
pytest.importorskip("transformers")

PROBE = {"warmup": 0, "repeats": 1, "decode_tokens": 2, "decode_warmup_tokens": 0}


def _config(name):
    return json.loads((REPO_ROOT / "config" / "models" / f"{name}.json").read_text())


def _events(model, cell, measurement=PROBE):
    from llmbench.predict.trace.events import trace_cell_events

    return trace_cell_events(_config(model), cell, {**measurement, "generate": False})


def test_phases_are_in_the_workers_order_and_every_free_follows_its_request():
    traced = _events("tiny-mistral", Cell("tiny-mistral", "none", "eager", "bfloat16", 2, 64))
    marks = traced.marks
    order = ["setup", "load", "prompt", "prefill", "prefill_timed", "decode_warmup", "decode"]
    assert [marks[p] for p in order] == sorted(marks[p] for p in order)
    live = set()
    for event in traced.events:
        if isinstance(event, Alloc):
            assert event.handle not in live and event.size > 0
            live.add(event.handle)
        else:
            assert isinstance(event, Free)
            live.remove(event.handle)
    # what stays: the weights and the cuBLAS workspace (the prompt is freed after "end";
    # no warm-up request under 4 MiB of weights)
    result = simulate(traced.events)
    assert result.allocated_after[-1] == result.allocated_after[marks["prompt"] - 1] + 32 * 2**20
    assert all(isinstance(e, Free) for e in traced.events[marks["end"] :])
    assert traced.phase_of(marks["prefill"]) == "prefill"


def test_more_passes_add_events_but_not_peak():
    cell = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 1, 128)
    one = _events("tiny-mistral", cell)
    more = _events("tiny-mistral", cell, {**PROBE, "repeats": 3, "decode_warmup_tokens": 2})
    assert len(more.events) > len(one.events)
    assert simulate(more.events).peak_allocated == simulate(one.events).peak_allocated


def test_the_7b_load_is_the_recorded_one():
    """Mistral-7B bf16: the recorded H200 run's first four requests (set-up, warm-up), and the
    reserved bytes after load of the H100 probes (14,497,611,776)."""
    traced = _events("mistral-7b-v0.3", Cell("mistral-7b-v0.3", "none", "sdpa", "bfloat16", 1, 16))
    fixture = REPO_ROOT / "tests/fixtures/allocator"
    lines = lzma.open(fixture / "mistral-7b-v0.3__none__sdpa__bfloat16__b2_s8192.replay.xz", "rt")
    recorded = [next(lines) for _ in range(5)][1:]
    assert recorded == ["a8\n", "f0\n", "a14493949952\n", "f0\n"]
    assert [getattr(e, "size", None) for e in traced.events[:4]] == [8, None, 14493949952, None]
    result = simulate(traced.events[: traced.marks["prompt"]])
    assert result.reserved_after[-1] == 14_497_611_776
    assert result.allocated_after[-1] == 14_496_048_128


def test_generate_is_not_traced():
    from llmbench.predict.trace.model import Untraceable

    with pytest.raises(Untraceable, match="generate"):
        from llmbench.predict.trace.events import trace_cell_events

        trace_cell_events(
            _config("tiny-mistral"),
            Cell("tiny-mistral", "none", "sdpa", "bfloat16", 1, 8),
            {**PROBE, "generate": True},
        )
