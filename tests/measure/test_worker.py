"""The measurement worker, end to end on a tiny CPU model loaded as a user's own weights."""

import pytest

from llmbench.grid.spec import Cell
from llmbench.measure import models
from llmbench.record.cell import validate_cell_result
from llmbench.run.runner import run_cell

SETTINGS = {
    "device": "cpu",
    "device_map": "auto",
    "bnb_4bit_compute_dtype": "bfloat16",
    "memory_budget_gib": None,
    "cell_timeout_s": 120,
    "prequantize": False,
    "measurement": {
        "warmup": 1,
        "repeats": 2,
        "decode_tokens": 5,
        "decode_warmup_tokens": 1,
        "input_tokens": "random",
        "seed": 0,
    },
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, repo):
    path = tmp_path_factory.mktemp("my-weights")
    models.materialize(repo / "config/models/tiny-llama.json", path, seed=1, device="cpu")
    return path


@pytest.mark.parametrize("attn, calls", [("eager", 2), ("sdpa", 2), ("sdpa-math", 2)])
def test_cell_from_pretrained_weights_measures_every_phase(tmp_path, pretrained, attn, calls):
    out = tmp_path / "cell.json"
    result = run_cell(
        cell=Cell("tiny-llama", "none", attn, "bfloat16", 2, 32),
        settings=SETTINGS,
        model_entry={"pretrained": str(pretrained)},
        base_dir=None,
        prequantized_dir=None,
        out_path=out,
        timeout_s=120,
    )
    validate_cell_result(result, where=str(out))
    assert result["status"] == "ok", result["reason"]
    assert result["model"]["checkpoint_kind"] == "pretrained"
    assert result["checks"]["attention"]["calls_in_one_forward"] == calls
    assert result["latency"]["prefill"]["count"] == 2
    assert result["latency"]["decode_per_token"]["count"] == 4  # first token comes from prefill
    assert set(result["memory"]["phases"]) == {"load", "prefill", "decode"}
    assert result["cell"]["sdpa_backend"] == (attn.split("-")[1] if "-" in attn else None)
    assert result["efficiency"]["prefill_flops"] > 0 and result["efficiency"]["mfu"] is None
