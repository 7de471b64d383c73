"""Shared by the predictor's tests (tests/predict/test_predict_*.py): the model configs, the
committed H100 reference cells and frontier probes, a hand-computable shape, and helpers."""

from __future__ import annotations

import json
from pathlib import Path

from llmbench import predict
from llmbench.grid.spec import Cell
from llmbench.predict import ALLOCATOR_GRANULE

REPO = Path(__file__).resolve().parents[2]
MISTRAL = json.loads((REPO / "config" / "models" / "mistral-7b-v0.3.json").read_text())
REFERENCE = sorted(
    path
    for run in ("seed", "extended")  # the one-GPU runs (seed-2gpu spreads over two)
    for path in (REPO / "results" / "reference" / "h100" / run / "cells").rglob("*.json")
)
PROBES = sorted(
    (REPO / "results" / "reference" / "h100" / "frontier" / "frontier" / "probes").rglob("*.json")
)
"""The H100 frontier's probes: sizes the grids do not reach (32768 tokens, batch 8, 65 GiB)."""

# A small shape whose every term is easy to compute by hand.
TINY = {
    "model_type": "mistral",
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 2048,
    "tie_word_embeddings": False,
}
PROJECTION_PARAMS = 128 * 128 + 2 * 64 * 128 + 128 * 128 + 3 * 384 * 128  # per layer: 196608


def cell(quant="none", attn="sdpa", dtype="bfloat16", batch=2, seq=1024, model="m"):
    return Cell(model, quant, attn, dtype, batch, seq)


def granule(n):
    return -(-n // ALLOCATOR_GRANULE) * ALLOCATOR_GRANULE


def load_reference(path):
    result = json.loads(path.read_text())
    return result, Cell.from_mapping(result["cell"])


def device0(result, phase, key):
    return result["memory"]["phases"][phase]["devices"][0][key]


def reference_rows(paths=REFERENCE):
    """(path, cell JSON, cell, prediction under the cell's own settings) per committed cell."""
    rows = []
    for path in paths:
        result, c = load_reference(path)
        settings = result["settings"]
        prediction = predict.predict(
            MISTRAL,
            c,
            bnb_4bit_compute_dtype=settings["bnb_4bit_compute_dtype"],
            decode_tokens=settings["measurement"]["decode_tokens"],
        )
        rows.append((path, result, c, prediction))
    return rows
