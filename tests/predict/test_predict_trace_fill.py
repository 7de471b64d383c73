"""llmbench.predict.trace.fill: a grid's cells traced into the cache once, then read."""

from __future__ import annotations

import shutil

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")

from predict_fixtures import REPO  # noqa: E402

from llmbench.predict.trace.fill import fill  # noqa: E402


def test_fill_traces_missing_cells_once_and_counts_the_untraceable(tmp_path):
    (tmp_path / "config" / "models").mkdir(parents=True)
    (tmp_path / "config" / "grids").mkdir()
    for name in ("tiny-mistral", "tiny-opt"):
        shutil.copy(REPO / "config" / "models" / f"{name}.json", tmp_path / "config" / "models")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"] = {
        name: {"architecture": f"config/models/{name}.json"}
        for name in ("tiny-mistral", "tiny-opt")
    }
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "config" / "grids" / "g.yaml").write_text(
        "blocks:\n  - {models: [tiny-mistral], quant: [none], attn: [sdpa],"
        " dtype: [bfloat16], batch: [1], seq: [8, 16]}\n"
        # LLM.int8's outlier model reads intermediate_size, which OPT's config lacks
        "  - {models: [tiny-opt], quant: [int8], attn: [sdpa],"
        " dtype: [bfloat16], batch: [1], seq: [8, 16]}\n"
    )
    cache = tmp_path / "cache"
    first = fill("g", tmp_path, cache)
    assert first["tiny-mistral"] == {"traced": 2, "cached": 0, "untraceable": 0, "reason": None}
    assert first["tiny-opt"]["untraceable"] == 2
    assert "outlier model cannot read" in first["tiny-opt"]["reason"]
    second = fill("g", tmp_path, cache)
    assert second["tiny-mistral"]["cached"] == 2 and second["tiny-mistral"]["traced"] == 0
    assert len(list(cache.rglob("*.json"))) == 4
