"""The load phase's plan (``measure.phases.load.plan_load``): the cell's device_map and
max_memory reach from_pretrained."""

from pathlib import Path

import torch

from llmbench.grid.spec import Cell
from llmbench.measure.phases.load import plan_load
from llmbench.measure.phases.spec import CellSpec


def spec(cell: Cell) -> CellSpec:
    return CellSpec(
        cell=cell,
        settings={"device_map": "auto", "bnb_4bit_compute_dtype": "bfloat16"},
        measurement={},
        model_entry={"architecture": "config/models/tiny-llama.json"},
        base_dir=Path("/models/tiny-llama"),
        prequantized_dir=None,
        partial_path="/tmp/partial.json",
        spawned_at=0.0,
    )


def test_the_cells_device_map_and_max_memory_are_passed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cell = Cell(
        "tiny-llama", "none", "sdpa", "bfloat16", 1, 8, "eager", device_map="balanced_low_0"
    )
    capped = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, max_memory="60GiB")
    kwargs = plan_load(spec(cell), "cuda").kwargs
    assert kwargs["device_map"] == "balanced_low_0" and "max_memory" not in kwargs
    kwargs = plan_load(spec(capped), "cuda").kwargs
    assert kwargs["device_map"] == "auto"  # config: the config key
    assert kwargs["max_memory"] == {0: 60 * 2**30, 1: 60 * 2**30}
    single = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, device_map="single")
    assert plan_load(spec(single), "cuda").kwargs["device_map"] == {"": 0}
    assert plan_load(spec(cell), "cpu").kwargs["device_map"] == "cpu"
