"""llmbench.predict.trace.static: static-cache and CUDA-graph decode traced on meta tensors
(the worker's own StaticGeneration), on the tiny Mistral config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llmbench.grid.spec import Cell  # noqa: E402
from llmbench.measure.phases.decode import TRUTH_STEPS  # noqa: E402
from llmbench.predict.constants import CUBLAS_WORKSPACE_BYTES, granule  # noqa: E402
from llmbench.predict.trace.phases import trace_cell  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = json.loads((REPO / "config" / "models" / "tiny-mistral.json").read_text())


def _layer_bytes(positions: int) -> int:
    """One layer's K or V of the static cache: (batch 2, kv heads, positions, head dim) bf16,
    in the allocator's 512-byte blocks."""
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
    return granule(2 * 2 * TINY["num_key_value_heads"] * positions * head_dim)


@pytest.mark.parametrize("warmup", [0, 1, 4])
def test_graph_decode_holds_the_warmup_and_truth_positions_and_three_workspaces(warmup):
    static = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 2, 64, decode_mode="static")
    graph = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 2, 64, decode_mode="graph")
    traced_static = trace_cell(TINY, static, decode_tokens=8)
    traced_graph = trace_cell(TINY, graph, decode_tokens=8, decode_warmup_tokens=warmup)
    # the worker's _time_graph_decode: prompt + max(1, warmup) + TRUTH_STEPS + decode_tokens
    positions = 64 + max(1, warmup) + TRUTH_STEPS + 8
    layers = TINY["num_hidden_layers"]
    assert traced_graph.decode_kv == layers * (2 * _layer_bytes(positions) + 512)
    assert traced_static.decode_kv == layers * (2 * _layer_bytes(64 + 8) + 512)
    # beyond the longer cache: two more cuBLAS workspaces and the float32 logits it keeps
    extra = traced_graph.decode - traced_static.decode
    longer = traced_graph.decode_kv - traced_static.decode_kv
    logits = 2 * TINY["vocab_size"] * 4
    assert extra >= 2 * CUBLAS_WORKSPACE_BYTES + longer + logits
    assert extra < 2 * CUBLAS_WORKSPACE_BYTES + longer + logits + 2**20
    assert traced_graph.prefill == traced_static.prefill  # the same memory pass


def test_flash_attention_2_static_decode_unpads_the_written_positions():
    import torch

    from llmbench.predict.trace.cuda import padding_ones
    from llmbench.predict.trace.model import fa2_unpadded_inputs

    meta = {"device": "meta", "dtype": torch.bfloat16}
    query = torch.empty(4, 32, 1, 128, **meta)  # (batch, heads, one token, head dim)
    key = torch.empty(4, 8, 600, 128, **meta)  # the static cache: 600 positions
    mask = torch.empty(4, 600, dtype=torch.long, device="meta")
    with padding_ones(513):  # prompt 512 + the step's own position
        indices, cumulative, keys, values, cu_q = fa2_unpadded_inputs(query, key, key, mask)
    assert indices.shape == (4 * 513,) and indices.dtype == torch.long
    assert cumulative.shape == cu_q.shape == (5,)
    assert keys.shape == values.shape == (4 * 513, 8, 128)
    with padding_ones(513), pytest.raises(RuntimeError, match="one-token query"):
        fa2_unpadded_inputs(torch.empty(4, 32, 2, 128, **meta), key, key, mask)


def test_flash_attention_2_static_decode_holds_its_unpadded_keys_and_values(monkeypatch):
    from llmbench.predict.trace import model

    fa2 = Cell(
        "tiny-mistral", "none", "flash_attention_2", "bfloat16", 8, 256, decode_mode="static"
    )
    traced = trace_cell(TINY, fa2, decode_tokens=8)
    monkeypatch.setattr(model, "fa2_unpadded_inputs", lambda *args: [])
    without = trace_cell(TINY, fa2, decode_tokens=8)
    assert traced.prefill == without.prefill  # an unpadded prompt takes no padded path
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
    gathered = 8 * 258 * TINY["num_key_value_heads"] * head_dim * 2  # K of batch x written
    assert traced.decode >= without.decode + 2 * gathered
