"""llmbench.predict.trace.placement: transformers' device_map on the meta model, against the
committed two-GPU H100 reference (seed-2gpu)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from predict_fixtures import MISTRAL, REPO, cell  # noqa: E402

from llmbench.grid.spec import Cell  # noqa: E402
from llmbench.predict.constants import CUDA_CONTEXT_BYTES  # noqa: E402
from llmbench.predict.trace.model import Untraceable  # noqa: E402
from llmbench.predict.trace.placement import predict_placement  # noqa: E402

TWO_GPU = REPO / "results" / "reference" / "h100" / "seed-2gpu" / "cells" / "mistral-7b-v0.3"


@pytest.mark.parametrize("relpath", ["none/sdpa/bfloat16", "none/sdpa/float32"])
def test_the_two_gpu_reference_placement_is_predicted_exactly(relpath):
    result = json.loads((TWO_GPU / relpath / "b2_s3072.json").read_text())
    assert result["settings"]["device_map"] == "auto"
    free = [g["total_memory_bytes"] - CUDA_CONTEXT_BYTES for g in result["environment"]["gpus"]]
    predicted = predict_placement(MISTRAL, Cell.from_mapping(result["cell"]), free)
    assert predicted == result["model"]["placement"]


def test_a_small_gpu_takes_fewer_layers_and_every_byte_is_placed():
    tiny = json.loads((REPO / "config" / "models" / "tiny-llama.json").read_text())
    c = cell("none", "sdpa", "bfloat16", 1, 8, model="tiny-llama")
    even = predict_placement(tiny, c, [10**9, 10**9])
    assert set(even["parameter_bytes_per_device"]) == {"cuda:0", "cuda:1"}
    one = predict_placement(tiny, c, [10**9])
    assert sum(even["parameter_bytes_per_device"].values()) == sum(
        one["parameter_bytes_per_device"].values()
    )


def test_quantized_placement_is_refused_with_the_reason():
    with pytest.raises(Untraceable, match="placement of 'nf4'"):
        predict_placement(MISTRAL, cell("nf4"), [10**11, 10**11])
