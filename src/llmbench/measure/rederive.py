"""Re-derive a cell's ``efficiency`` record from what the cell recorded, under the current
conventions of ``measure.efficiency`` (and ``measure.phases.summary``'s decode bytes).

The record is derived, not measured: the model's shape and weight count, the median prefill
and decode step, the weight bytes the load phase inspected and the cell's measured roofline.
When those conventions change (e.g. linear layers counted from the model's modules, a
sliding window capping the KV cache read, a mixture of experts' routed weights), a cell
measured before can be brought up to date without a GPU: the model is built on the ``meta``
device from its architecture config (no weights), everything else is read from the cell
JSON. Nothing measured is changed; ``efficiency.conventions`` says it was re-derived and at
which commit.

Run: ``python -m llmbench.measure.rederive CONFIG.json CELL.json [CELL.json ...]`` (every
cell of that one model) - rewrites each cell atomically. Needs torch and transformers.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure import efficiency
from llmbench.measure.efficiency import Shape
from llmbench.measure.phases.load import expert_weights, matmul_params_per_token
from llmbench.measure.phases.summary import compute_dtype, decode_weight_bytes
from llmbench.record.cell import write_json_atomic


def meta_model(architecture: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model of a config.json dict on the ``meta`` device, and its ``config.to_dict()``."""
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(
        **{k: v for k, v in architecture.items() if k != "architectures"}
    )
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model, model.config.to_dict()


def rederive(result: Mapping[str, Any], model: Any, config: Mapping[str, Any], note: str) -> dict:
    """The ``efficiency`` record of an ``ok`` cell ``result`` under the current conventions.

    Expert weights are counted at their bf16 size (bitsandbytes leaves transformers 5's 3-D
    expert parameters unquantized). Raises KeyError for a cell without the recorded inputs.
    """
    cell = Cell.from_mapping(result["cell"])
    shape = Shape.from_config(config, counted=matmul_params_per_token(model, config))
    weight_bytes, routing = decode_weight_bytes(
        result["model"]["weights"],
        shape.tie_word_embeddings,
        expert_weights(model, config),
        cell.batch,
    )
    assumption = note if routing is None else f"{routing}; {note}"
    old = result["efficiency"]
    latency = result["latency"]
    gpus = result["environment"].get("gpus") or []
    return efficiency.efficiency(
        shape,
        batch=cell.batch,
        seq=cell.seq,
        compute_dtype=compute_dtype(cell, result["settings"]["bnb_4bit_compute_dtype"]),
        kv_dtype=cell.dtype,
        weight_bytes_read_per_step=weight_bytes,
        prefill_ms=latency["prefill"]["p50"],
        decode_ms_per_step=latency["decode_per_token"]["p50"],
        decode_tokens=result["settings"]["measurement"]["decode_tokens"],
        device_name=gpus[0]["name"] if gpus else None,
        n_devices=len(gpus) or 1,
        measured={
            "copy_bandwidth_bytes_s": old.get("measured_copy_bandwidth_bytes_s"),
            "bf16_matmul_flops": old.get("measured_bf16_matmul_flops"),
        },
        assumption=assumption,
    ).to_dict()


def main(argv: list[str] | None = None) -> int:
    """Rewrite the efficiency record of each ``ok`` cell given (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m llmbench.measure.rederive")
    parser.add_argument("architecture", type=Path, help="the model's config.json")
    parser.add_argument("cells", type=Path, nargs="+", help="cell JSONs of that model")
    parser.add_argument("--commit", required=True, help="the commit whose conventions apply")
    args = parser.parse_args(argv)
    model, config = meta_model(json.loads(args.architecture.read_text()))
    note = f"re-derived from the recorded inputs under the conventions of commit {args.commit}"
    for path in args.cells:
        result = json.loads(path.read_text())
        if result.get("status") != "ok":
            continue
        result["efficiency"] = rederive(result, model, config, note)
        write_json_atomic(path, result)
        print(f"{path}: efficiency re-derived")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
