"""CellSpec: the runner's spec JSON read as a typed value, failing where the worker always did."""

from pathlib import Path

import pytest

from llmbench.grid.spec import Cell
from llmbench.measure.phases.spec import CellSpec

CELL = {"model": "tiny-llama", "quant": "none", "attn": "sdpa-math", "dtype": "bfloat16",
        "batch": 2, "seq": 8}  # fmt: skip


def runner_spec(**changes):
    spec = {
        "cell": CELL,
        "settings": {"device": "cpu", "measurement": {"repeats": 2}},
        "model_entry": {"architecture": "config/models/tiny-llama.json"},
        "base_dir": "/models/tiny-llama",
        "prequantized_dir": None,
        "partial_path": "/tmp/partial.json",
        "spawned_at": 12.5,
    }
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not ...}


def test_a_runner_spec_is_read_with_its_types():
    spec = CellSpec.from_json(runner_spec())
    assert spec.cell == Cell("tiny-llama", "none", "sdpa-math", "bfloat16", 2, 8)
    assert spec.measurement == {"repeats": 2}
    assert spec.base_dir == Path("/models/tiny-llama") and spec.prequantized_dir is None
    assert spec.partial_path == "/tmp/partial.json" and spec.spawned_at == 12.5


def test_spawned_at_defaults_to_now(monkeypatch):
    monkeypatch.setattr("time.time", lambda: 99.0)
    assert CellSpec.from_json(runner_spec(spawned_at=...)).spawned_at == 99.0


def test_a_spec_without_measurement_settings_raises_keyerror():
    with pytest.raises(KeyError, match="measurement"):
        CellSpec.from_json(runner_spec(settings={"device": "cpu"}))


def test_a_missing_model_entry_is_left_to_the_load_phase():
    assert CellSpec.from_json(runner_spec(model_entry=...)).model_entry is None
