"""The allocator mode check and the trace switch (fake torch: no CUDA here)."""

from types import SimpleNamespace

from llmbench.grid.spec import Cell
from llmbench.measure import allocator

CELL = Cell("m", "none", "sdpa", "bfloat16", 1, 8)
EXPANDABLE = Cell("m", "none", "sdpa", "bfloat16", 1, 8, allocator="expandable_segments")


def fake_torch(segments):
    memory = SimpleNamespace(_snapshot=lambda: {"segments": segments})
    return SimpleNamespace(cuda=SimpleNamespace(memory=memory))


def test_the_segments_say_which_mode_ran(monkeypatch):
    monkeypatch.delenv(allocator.ENV_VARIABLE, raising=False)
    assert allocator.allocator_check(fake_torch([{"is_expandable": False}]), CELL)["passed"]
    wrong = allocator.allocator_check(fake_torch([{"is_expandable": False}]), EXPANDABLE)
    assert not wrong["passed"] and "expandable_segments requested" in wrong["reason"]
    monkeypatch.setenv(allocator.ENV_VARIABLE, "expandable_segments:True")
    right = allocator.allocator_check(fake_torch([{"is_expandable": True}]), EXPANDABLE)
    assert right["passed"] and right["expandable_segments_observed"] is True


def test_without_the_flag_the_environment_is_the_evidence(monkeypatch):
    monkeypatch.setenv(allocator.ENV_VARIABLE, "expandable_segments:True")
    assert allocator.allocator_check(fake_torch([{}]), EXPANDABLE)["passed"]
    assert not allocator.allocator_check(fake_torch([]), CELL)["passed"]


def test_no_trace_folder_no_recording(monkeypatch):
    monkeypatch.delenv(allocator.TRACE_DIR_VARIABLE, raising=False)
    trace = allocator.AllocatorTrace(SimpleNamespace(), CELL)  # touches nothing of torch
    assert trace.dump() is None
