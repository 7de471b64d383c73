"""Combinations known not to run, decided before any model loads (``grid.support``)."""

import pytest

from llmbench.grid.spec import Cell
from llmbench.grid.support import static_unsupported


@pytest.mark.parametrize("quant", ["none", "int8", "nf4-not-passed"])
def test_a_4bit_compute_dtype_on_a_cell_without_4bit_layers_is_unsupported(quant):
    cell = Cell("m", quant, "sdpa", "bfloat16", 1, 8, bnb_compute="float32")
    reason = static_unsupported(cell, "cuda")
    assert reason is not None and f"quant {quant} has none" in reason


@pytest.mark.parametrize("quant", ["none", "nf4", "fp4-dq"])
def test_an_int8_threshold_on_a_cell_that_is_not_int8_is_unsupported(quant):
    cell = Cell("m", quant, "sdpa", "bfloat16", 1, 8, int8_threshold="4")
    reason = static_unsupported(cell, "cuda")
    assert reason is not None and f"quant {quant} is not int8" in reason


def test_the_bnb_axes_run_where_they_apply_on_cpu_and_cuda():
    for device in ("cpu", "cuda"):
        for quant in ("nf4", "nf4-dq", "fp4", "fp4-dq"):
            cell = Cell("m", quant, "sdpa", "bfloat16", 1, 8, bnb_compute="float32")
            assert static_unsupported(cell, device) is None
        cell = Cell("m", "int8", "sdpa", "bfloat16", 1, 8, int8_threshold="0")
        assert static_unsupported(cell, device) is None
        assert static_unsupported(Cell("m", "none", "sdpa", "bfloat16", 1, 8), device) is None


def test_every_reason_that_applies_is_named():
    cell = Cell(
        "m", "nf4", "sdpa", "bfloat16", 1, 8, allocator="expandable_segments", int8_threshold="4"
    )
    reason = static_unsupported(cell, "cpu")
    assert "quant nf4 is not int8" in reason and "CUDA allocator" in reason
    assert static_unsupported(cell, "cuda") == static_unsupported(
        Cell("m", "nf4", "sdpa", "bfloat16", 1, 8, int8_threshold="4"), "cuda"
    )


@pytest.mark.parametrize("quant", ["fp8", "fp8-dyn"])
def test_fp8_needs_a_cuda_gpu_of_compute_capability_8_9_or_more(quant):
    cell = Cell("m", quant, "sdpa", "bfloat16", 1, 8)
    assert "this cell runs on the CPU" in static_unsupported(cell, "cpu")
    assert "this GPU is 8.0" in static_unsupported(cell, "cuda", (8, 0))
    assert static_unsupported(cell, "cuda", (8, 9)) is None
    assert static_unsupported(cell, "cuda", (9, 0)) is None
    assert static_unsupported(cell, "cuda") is None  # capability unknown: attempted
    assert static_unsupported(Cell("m", "none", "sdpa", "bfloat16", 1, 8), "cuda", (8, 0)) is None


@pytest.mark.parametrize("mode", ["static", "graph"])
def test_a_quantized_kv_cache_runs_only_in_eager_decode(mode):
    cell = Cell("m", "none", "sdpa", "bfloat16", 1, 8, decode_mode=mode, kv_cache="hqq-int4")
    reason = static_unsupported(cell, "cuda")
    assert reason is not None and f"decode_mode {mode} decodes into a preallocated" in reason
    eager = Cell("m", "none", "sdpa", "bfloat16", 1, 8, kv_cache="quanto-int2")
    assert static_unsupported(eager, "cpu") is None


def test_a_device_map_off_cuda_and_a_max_memory_without_a_planner_are_unsupported():
    planned = Cell("m", "none", "sdpa", "bfloat16", 1, 8, device_map="balanced")
    assert static_unsupported(planned, "cuda") is None
    assert "runs on the CPU" in static_unsupported(planned, "cpu")
    single = Cell("m", "none", "sdpa", "bfloat16", 1, 8, device_map="single", max_memory="60GiB")
    assert "device_map single plans none" in static_unsupported(single, "cuda")
    capped = Cell("m", "none", "sdpa", "bfloat16", 1, 8, max_memory="60GiB")
    assert static_unsupported(capped, "cuda") is None
    # at device_map config, a config whose device_map is single plans none either: the cap
    # would be silently ignored under the cell's _mm60GiB name
    by_config = static_unsupported(capped, "cuda", device_map=capped.device_map_policy("single"))
    assert "device_map single plans none (the config's)" in by_config


def test_positions_needed_counts_what_the_run_feeds_the_model():
    from llmbench.grid.support import positions_needed

    eager = Cell("m", "none", "sdpa", "bfloat16", 1, 2017)
    assert positions_needed(eager, 32) == 2048  # the last generated token is never fed back
    assert positions_needed(eager, 0) == 2017
    static = Cell("m", "none", "sdpa", "bfloat16", 1, 2017, decode_mode="static")
    assert positions_needed(static, 32) == 2049
