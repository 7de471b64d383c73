"""llmbench.measure.kvcache and the worker with a quantized KV cache: a tiny model on the CPU
decodes through transformers' QuantizedCache, the cell records what the cache stores and
checks that it is the requested backend and bit width; a missing backend is ``unavailable``
before the model loads; the stored bytes equal llmbench.predict.kvcache's formula exactly."""

import json

import pytest
from conftest import REPO
from test_worker import SETTINGS, worker_spec

from llmbench.grid.spec import Cell
from llmbench.measure import kvcache, models, worker
from llmbench.predict.architecture import Architecture
from llmbench.predict.kvcache import kv_cache_bytes
from llmbench.record.cell import validate_cell_result
from llmbench.run.runner import run_cell

pytest.importorskip("optimum.quanto")
pytest.importorskip("hqq")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("my-weights")
    models.materialize(REPO / "config/models/tiny-llama.json", path, seed=1, device="cpu")
    return path


@pytest.mark.parametrize("kv", ["quanto-int4", "quanto-int2", "hqq-int4", "hqq-int2"])
def test_a_quantized_cache_cell_records_its_stored_bytes_as_predicted(tmp_path, pretrained, kv):
    cell = Cell("tiny-llama", "none", "sdpa", "bfloat16", 2, 32, kv_cache=kv)
    out = tmp_path / "cell.json"
    result = run_cell(
        cell=cell,
        settings=SETTINGS,
        model_entry={"pretrained": str(pretrained)},
        base_dir=None,
        prequantized_dir=None,
        out_path=out,
        timeout_s=120,
    )
    validate_cell_result(result, where=str(out))
    assert result["status"] == "ok", result["reason"]
    check = result["checks"]["kv_cache"]
    assert check["passed"] and check["layers"] == 2, check
    assert check["expected"]["nbits"] == int(kv[-1])
    config = json.loads((REPO / "config/models/tiny-llama.json").read_text())
    steps = SETTINGS["measurement"]["decode_tokens"] - 1
    predicted = kv_cache_bytes(Architecture.from_config(config), cell, steps)
    stored = result["kv_cache"]
    assert (stored["quantized"], stored["residual"]) == (predicted.quantized, predicted.residual)
    assert stored["format"] == kv and stored["tensors"][0][0] == "uint8"
    assert set(result["memory"]["phases"]) == {"load", "prefill", "decode"}
    assert "generate" not in result["latency"]


def test_a_missing_backend_makes_the_cell_unavailable_before_load(tmp_path, monkeypatch):
    monkeypatch.setitem(kvcache.BACKEND_PACKAGES, "hqq", "no_such_hqq_module")
    cell = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, kv_cache="hqq-int4")
    result = worker.run(worker_spec(tmp_path, cell))
    assert (result["status"], result["phase"]) == ("unavailable", "setup")
    assert "no_such_hqq_module" in result["reason"]


def test_the_check_fails_for_a_cache_of_another_bit_width():
    import torch
    from transformers import AutoConfig, QuantizedCache

    config = AutoConfig.for_model(
        **json.loads((REPO / "config/models/tiny-llama.json").read_text())
    )
    cache = QuantizedCache(backend="quanto", config=config, nbits=2)
    keys = torch.randn(1, 2, 64, 32, dtype=torch.bfloat16)
    for index in range(config.num_hidden_layers):
        cache.update(keys, keys, index)
    cell = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 64, kv_cache="quanto-int4")
    check = kvcache.check_kv_cache(cache, cell)
    assert not check["passed"] and "nbits 2, not QuantoQuantizedLayer with 4" in check["reason"]
    assert kvcache.check_kv_cache(cache, Cell(**{**cell.__dict__, "kv_cache": "quanto-int2"}))[
        "passed"
    ]


def test_a_model_dtype_cell_builds_no_cache_and_needs_no_backend():
    cell = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8)
    assert kvcache.cache_factory(object(), cell) is None
    assert kvcache.check_backend(cell) is None


def test_a_quanto_extension_that_cannot_be_built_makes_the_cell_unavailable(monkeypatch):
    from optimum.quanto.library.extensions import extension

    class Unbuildable:
        @property
        def lib(self):
            raise OSError("CUDA_HOME environment variable is not set")

    monkeypatch.setitem(extension._extensions, "quanto_cuda", Unbuildable())
    cell = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, kv_cache="quanto-int4")
    reason = kvcache.prepare_backend(cell, "cuda")
    assert "quanto_cuda" in reason and "CUDA_HOME environment variable is not set" in reason
    assert (
        kvcache.prepare_backend(Cell(**{**cell.__dict__, "kv_cache": "hqq-int4"}), "cuda") is None
    )
    assert kvcache.prepare_backend(cell, "cpu") is None  # quanto_cpp: built, loads
