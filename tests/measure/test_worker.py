"""The measurement worker: end to end on a tiny CPU model loaded as a user's own weights, and
the record a cell ends with when set-up or load fails."""

import subprocess
import sys
from dataclasses import asdict

import pytest
from conftest import REPO

from llmbench.grid.spec import Cell
from llmbench.measure import models, worker
from llmbench.record.cell import read_json, validate_cell_result
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


def worker_spec(tmp_path, cell, settings=SETTINGS, **changes):
    spec = {
        "cell": asdict(cell),
        "settings": settings,
        "model_entry": {"pretrained": str(tmp_path / "never-loaded")},
        "base_dir": None,
        "prequantized_dir": None,
        "partial_path": str(tmp_path / "partial.json"),
    }
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not ...}


def test_importing_the_worker_imports_no_torch():
    """The warm-start server imports the worker before forking; torch must stay out of it."""
    code = "import sys, llmbench.measure.worker; print('torch' in sys.modules)"
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


def test_a_statically_unsupported_cell_ends_in_setup_with_the_device_recorded(tmp_path):
    cell = Cell("tiny-llama", "none", "flash_attention_2", "bfloat16", 1, 8)
    result = worker.run(worker_spec(tmp_path, cell))
    assert (result["status"], result["phase"]) == ("unsupported", "setup")
    assert result["reason"].startswith("flash-attn kernels run only on NVIDIA CUDA GPUs")
    assert result["cell"]["device"] == "cpu" and "cuda_available" in result["environment"]
    assert result["memory"] is None and result["model"] is None
    assert read_json(tmp_path / "partial.json") == result


def test_a_spec_without_measurement_settings_fails_in_setup(tmp_path):
    settings = {k: v for k, v in SETTINGS.items() if k != "measurement"}
    result = worker.run(
        worker_spec(tmp_path, Cell("m", "none", "eager", "float32", 1, 8), settings)
    )
    assert (result["status"], result["phase"]) == ("error", "setup")
    assert result["reason"] == "other_error in setup: 'measurement'"


def test_a_spec_without_a_model_entry_fails_in_load(tmp_path):
    cell = Cell("m", "none", "eager", "float32", 1, 8)
    result = worker.run(worker_spec(tmp_path, cell, model_entry=...))
    assert (result["status"], result["phase"]) == ("error", "load")
    assert result["reason"] == "other_error in load: 'model_entry'"
    assert result["memory"]["phases"] == {} and "start_and_imports_s" in result["timing_breakdown"]


def test_a_4bit_cell_runs_with_the_compute_dtype_it_names_and_proves_it(tmp_path, pretrained):
    out = tmp_path / "cell.json"
    result = run_cell(
        cell=Cell("tiny-llama", "fp4", "sdpa", "bfloat16", 1, 16, bnb_compute="float32"),
        settings=SETTINGS,  # bnb_4bit_compute_dtype: bfloat16, which the cell overrides
        model_entry={"pretrained": str(pretrained)},
        base_dir=None,
        prequantized_dir=None,
        out_path=out,
        timeout_s=120,
    )
    validate_cell_result(result, where=str(out))
    assert result["status"] == "ok", result["reason"]
    assert result["cell"]["bnb_compute"] == "float32"
    check = result["checks"]["quantization"]
    assert check["applied"] == "fp4" and check["passed"]
    assert check["compute_dtype"] == {"requested": "float32", "found": ["float32"], "passed": True}
    passed = result["model"]["from_pretrained_kwargs"]["quantization_config"]
    assert passed["bnb_4bit_compute_dtype"] == "float32"
    assert passed["bnb_4bit_quant_type"] == "fp4"


def test_a_bnb_setting_on_a_cell_it_does_not_apply_to_is_unsupported_before_load(tmp_path):
    cell = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, int8_threshold="4")
    result = worker.run(worker_spec(tmp_path, cell))
    assert (result["status"], result["phase"]) == ("unsupported", "setup")
    assert (
        result["reason"]
        == "int8_threshold 4 sets LLM.int8's outlier threshold; quant none is not int8"
    )
    assert result["model"] is None


def test_an_fp8_cell_on_the_cpu_is_unsupported_before_load(tmp_path):
    cell = Cell("tiny-llama", "fp8-dyn", "sdpa", "bfloat16", 1, 8)
    result = worker.run(worker_spec(tmp_path, cell))
    assert (result["status"], result["phase"]) == ("unsupported", "setup")
    assert "compute capability >= 8.9" in result["reason"] and result["model"] is None


def test_a_prompt_past_learned_position_embeddings_is_unsupported_after_load(tmp_path, repo):
    # OPT's table holds max_position_embeddings positions (plus 2 offset rows): a prompt of
    # 2045 and 5 decoded tokens (4 fed back) need 2049 and index past it (on CUDA: a
    # device-side assert); 2044 needs exactly 2048 and runs
    weights = tmp_path / "tiny-opt"
    models.materialize(repo / "config/models/tiny-opt.json", weights, seed=1, device="cpu")
    common = dict(
        settings=SETTINGS,
        model_entry={"pretrained": str(weights)},
        base_dir=None,
        prequantized_dir=None,
        timeout_s=120,
    )
    out = tmp_path / "past.json"
    result = run_cell(
        cell=Cell("tiny-opt", "none", "eager", "float32", 1, 2045), out_path=out, **common
    )
    validate_cell_result(result, where=str(out))
    assert result["status"] == "unsupported"
    assert "need 2049 positions" in result["reason"] and "hold 2048" in result["reason"]
    inside = run_cell(
        cell=Cell("tiny-opt", "none", "eager", "float32", 1, 2044),
        out_path=tmp_path / "in.json",
        **common,
    )
    assert inside["status"] == "ok", inside["reason"]
