"""llmbench.predict.trace.devices (and trace.placement's planner): per-device peaks against
the committed two-GPU H100 reference (seed-2gpu), accelerate's own planner and the one-GPU
tracer."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from predict_fixtures import MISTRAL, REPO, cell  # noqa: E402

from llmbench.grid.spec import Cell  # noqa: E402
from llmbench.predict.constants import CUDA_CONTEXT_BYTES, GIB  # noqa: E402
from llmbench.predict.trace.devices import trace_devices  # noqa: E402
from llmbench.predict.trace.model import Untraceable, build_meta_model  # noqa: E402
from llmbench.predict.trace.phases import trace_cell  # noqa: E402
from llmbench.predict.trace.placement import plan_device_map  # noqa: E402

TWO_GPU = REPO / "results" / "reference" / "h100" / "seed-2gpu" / "cells" / "mistral-7b-v0.3"
LLAMA_70B = json.loads((REPO / "config" / "models" / "llama-3.1-70b.json").read_text())
TINY_LLAMA = json.loads((REPO / "config" / "models" / "tiny-llama.json").read_text())


@pytest.mark.parametrize(
    "relpath",
    [
        "none/sdpa/bfloat16",
        "none/sdpa/float32",
        "none/eager/bfloat16",
        "none/flash_attention_2/bfloat16",
    ],
)
def test_every_device_of_the_two_gpu_reference_is_predicted_exactly(relpath):
    """Measured peak allocated of load, prefill and decode on cuda:0 and cuda:1 (the logits
    copied back to cuda:0 make them differ) equal the prediction to the byte."""
    result = json.loads((TWO_GPU / relpath / "b2_s3072.json").read_text())
    assert result["status"] == "ok"
    free = [g["total_memory_bytes"] - CUDA_CONTEXT_BYTES for g in result["environment"]["gpus"]]
    decode_tokens = result["settings"]["measurement"]["decode_tokens"]
    peaks = trace_devices(
        MISTRAL,
        Cell.from_mapping(result["cell"]),
        free,
        result["settings"]["device_map"],
        decode_tokens=decode_tokens,
    )
    for phase in ("load", "prefill", "decode"):
        measured = {
            d["device"]: d["peak_allocated_bytes"]
            for d in result["memory"]["phases"][phase]["devices"]
        }
        assert getattr(peaks, phase) == measured, phase


def test_one_device_is_the_one_gpu_trace():
    c = cell("none", "eager", "bfloat16", 2, 64, model="tiny-llama")
    one = trace_cell(TINY_LLAMA, c, decode_tokens=8)
    single = trace_devices(TINY_LLAMA, c, [GIB], "single", decode_tokens=8)
    assert single.hf_device_map == {"": 0}
    assert (single.load, single.prefill, single.decode) == (
        {"cuda:0": one.load},
        {"cuda:0": one.prefill},
        {"cuda:0": one.decode},
    )


def test_weights_split_over_gpus_sum_to_the_one_device_weights():
    c = cell("none", "sdpa", "bfloat16", 1, 16, model="tiny-llama")
    single = trace_devices(TINY_LLAMA, c, [GIB], "single", decode_tokens=2)
    # 2.5 MB each, 1.8 MB of weights: balanced, so the planner splits it
    split = trace_devices(TINY_LLAMA, c, [2_500_000, 2_500_000], "auto", decode_tokens=2)
    assert split.devices == ["cuda:0", "cuda:1"]
    assert sum(split.load.values()) == single.load["cuda:0"]
    assert split.prefill["cuda:1"] < single.prefill["cuda:0"]  # cuda:0 holds no layer


@pytest.mark.parametrize("policy", ["sequential", "balanced", "balanced_low_0"])
def test_the_plan_is_accelerates_infer_auto_device_map(policy):
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    model = build_meta_model(LLAMA_70B, cell("none", "sdpa", "bfloat16", 1, 8, model="x"))
    free = [139 * GIB] * 3
    max_memory = dict(enumerate(free))
    if policy != "sequential":
        max_memory = get_balanced_memory(
            model,
            max_memory=max_memory,
            no_split_module_classes=model._no_split_modules,
            low_zero=policy == "balanced_low_0",
        )
    expected = infer_auto_device_map(
        model, max_memory=max_memory, no_split_module_classes=model._no_split_modules
    )
    assert plan_device_map(model, policy, free) == expected


def test_70b_in_bfloat16_is_offloaded_on_one_h200_and_split_over_two():
    c = cell("none", "sdpa", "bfloat16", 1, 1024, model="llama-3.1-70b")
    h200 = 141 * GIB - CUDA_CONTEXT_BYTES
    one = trace_devices(LLAMA_70B, c, [h200], "auto", decode_tokens=2)
    assert one.offloaded and not one.load  # 90 % of one GPU: lm_head and the last layers
    two = trace_devices(LLAMA_70B, c, [h200, h200], "auto", decode_tokens=2)
    assert two.devices == ["cuda:0", "cuda:1"] and not two.offloaded
    assert abs(two.load["cuda:0"] - two.load["cuda:1"]) < GIB  # balanced: 40 layers each
    assert all(two.peak(d) < h200 for d in two.devices)


def test_a_max_memory_cap_spreads_the_model_further():
    capped = Cell("llama-3.1-70b", "none", "sdpa", "bfloat16", 1, 8, max_memory="40GiB")
    model = build_meta_model(LLAMA_70B, capped)
    hf_map = plan_device_map(model, "sequential", [139 * GIB] * 4, capped.max_memory_bytes)
    assert set(hf_map.values()) == {0, 1, 2, 3}


def test_a_quantized_cell_is_untraceable_with_the_reason():
    with pytest.raises(Untraceable, match="placement of 'nf4'"):
        trace_devices(MISTRAL, cell("nf4"), [10**11, 10**11], "auto")


def test_the_load_transient_lands_on_the_device_that_holds_the_converted_weight():
    tiny = json.loads((REPO / "config" / "models" / "tiny-mixtral.json").read_text())
    c = cell("none", "sdpa", "bfloat16", 1, 16, model="tiny-mixtral")
    gate_up = 4 * 2 * 384 * 128 * 2  # one layer's fused experts, bf16
    single = trace_devices(tiny, c, [GIB], "single", decode_tokens=2)
    assert single.load_transient == {"cuda:0": gate_up}
    # 90 % of the weights per GPU: the planner puts one layer on each
    split = trace_devices(tiny, c, [single.load["cuda:0"] * 9 // 10] * 2, "auto", decode_tokens=2)
    assert (split.hf_device_map["model.layers.0"], split.hf_device_map["model.layers.1"]) == (0, 1)
    # each device builds its own layers' gate_up_proj: the transient is charged where it is
    assert split.load_transient == {"cuda:0": gate_up, "cuda:1": gate_up}
    for device in split.devices:
        assert split.peak(device) >= split.load[device] + gate_up
