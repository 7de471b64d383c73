"""After decode: the check verdict, energy per pass and token, the compute dtype."""

import pytest

from llmbench.grid.spec import Cell
from llmbench.measure.phases.summary import compute_dtype, energy_summary, verdict

CELL = Cell("tiny-llama", "nf4", "sdpa", "float16", 2, 10)


def test_verdict_is_ok_when_every_check_passed_and_ignores_a_busy_gpu():
    checks = {"gpu_clean": {"passed": False}, "quantization": {"passed": True}}
    assert verdict(checks) == ("ok", None)


def test_verdict_names_every_failed_check_in_order():
    checks = {
        "quantization": {"passed": False, "reason": "requested nf4 but the model holds none"},
        "attention": {"passed": False},
    }
    assert verdict(checks) == (
        "check_failed",
        "quantization: requested nf4 but the model holds none; attention: failed",
    )


def test_energy_summary_is_none_without_a_counter():
    assert energy_summary({"unit": "J", "source": None, "regions": {}}, CELL, {}, 4) is None


def test_energy_summary_per_pass_and_per_token():
    raw = {
        "unit": "J",
        "source": "nvml",
        "regions": {"prefill": {"joules": 8.0}, "decode": {"joules": None}},
    }
    summary = energy_summary(raw, CELL, {"repeats": 4}, 5)
    assert list(summary)[:3] == ["unit", "source", "regions"]
    assert summary["prefill_j_per_pass"] == 2.0
    assert summary["prefill_j_per_token"] == pytest.approx(2.0 / 20)
    assert summary["decode_j_per_token"] is None


def test_4bit_layers_compute_in_their_compute_dtype():
    assert compute_dtype(CELL, "bfloat16") == "bfloat16"
    assert compute_dtype(Cell("m", "int8", "sdpa", "float16", 1, 1), "bfloat16") == "float16"


def test_a_cells_4bit_compute_dtype_wins_over_the_configured_one():
    fp32 = Cell("m", "fp4-dq", "sdpa", "bfloat16", 1, 1, bnb_compute="float32")
    assert compute_dtype(fp32, "bfloat16") == "float32"
    assert compute_dtype(Cell("m", "fp4", "sdpa", "bfloat16", 1, 1), "float16") == "float16"
