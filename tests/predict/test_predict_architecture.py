"""llmbench.predict.architecture: the shape read from a config.json, and where a registry
entry's config.json is (never guessed for a hub model)."""

from __future__ import annotations

import json

from predict_fixtures import (
    REPO,
    TINY,
    cell,
    granule,
)

from llmbench import GIB, predict
from llmbench.predict import Architecture


def test_kv_cache_bytes_per_layer():
    arch = Architecture.from_config(TINY)
    # K and V: batch 2 x 2 kv heads x 10 tokens x head_dim 32 x 2 bytes, each rounded to 512.
    assert arch.kv_bytes(2, 10, 2) == 2 * granule(2 * 2 * 10 * 32 * 2) == 2 * 2560
    # The prefill's KV term is every layer's K and V for the whole prompt.
    prediction = predict.predict(TINY, cell(attn="sdpa", batch=2, seq=256))
    assert prediction.prefill.peak.kv_cache == 2 * 2 * (2 * 2 * 256 * 32 * 2)


def test_pretrained_without_local_config_is_not_guessed(tmp_path):
    models = {
        "arch": {"architecture": "config/models/mistral-7b-v0.3.json"},
        "hub": {"pretrained": "mistralai/Mistral-7B-v0.3"},
    }
    cells = [cell(model="arch"), cell(model="hub")]
    results = dict(predict.iter_predictions(cells, models, REPO))
    assert results[cells[0]] is not None and results[cells[1]] is None
    row = predict.prediction_row(cells[1], None, 80 * GIB, terms=True)
    assert row["note"] == "no architecture config"
    local = tmp_path / "weights"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(TINY))
    models["local"] = {"pretrained": str(local)}
    assert predict.model_config_for("local", models, REPO) == TINY
