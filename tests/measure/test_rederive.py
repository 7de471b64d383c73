"""Re-deriving a cell's efficiency record reproduces what a cell measured under the same
conventions computed on the GPU (committed H200 families cells, measured after the change)."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llmbench.measure.rederive import meta_model, rederive  # noqa: E402

CELLS = [
    "qwen3-8b/none/sdpa/bfloat16/b1_s32768.json",
    "phi-3-mini-4k/none/eager/bfloat16/b1_s4096.json",  # a 2047-token window
    "phi-3-mini-4k/nf4/sdpa/bfloat16/b1_s4096.json",
]


@pytest.mark.parametrize("relpath", CELLS)
def test_rederived_efficiency_equals_the_one_measured_under_the_same_conventions(repo, relpath):
    result = json.loads((repo / "results/reference/h200/families/cells" / relpath).read_text())
    arch = json.loads((repo / f"config/models/{result['cell']['model']}.json").read_text())
    model, config = meta_model(arch)
    again = rederive(result, model, config, note="test")
    recorded = result["efficiency"]
    for key, value in recorded.items():
        if key == "conventions":
            assert again[key].startswith(value) and again[key].endswith("; test")
        elif isinstance(value, float):
            assert again[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert again[key] == value, key


def test_a_moe_step_reads_the_experts_uniform_routing_reaches(repo):
    relpath = "qwen1.5-moe-a2.7b/none/sdpa/bfloat16/b1_s8192.json"
    result = json.loads((repo / "results/reference/h200/families/cells" / relpath).read_text())
    arch = json.loads((repo / "config/models/qwen1.5-moe-a2.7b.json").read_text())
    model, config = meta_model(arch)
    one = rederive(result, model, config, note="test")
    eight = rederive({**result, "cell": {**result["cell"], "batch": 8}}, model, config, "test")
    assert "4 of 60 experts per token" in one["conventions"]
    # batch 1 reads 4/60 of the experts; batch 8 reads 1 - (56/60)^8 = 42.4 % of them
    assert one["decode_bytes_per_step"] < eight["decode_bytes_per_step"] / 3
