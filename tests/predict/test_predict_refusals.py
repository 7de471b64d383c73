"""Cells that cannot run whatever the memory, known before a run
(``llmbench.predict.refusals``)."""

from __future__ import annotations

import json

import yaml
from predict_fixtures import REPO

from llmbench import predict
from llmbench.grid.spec import Cell
from llmbench.grid.support import static_unsupported
from llmbench.predict import refusals


def test_the_pipelines_own_rule_flags_flash_attention_on_the_cpu():
    row = {**Cell("m", "none", "flash_attention_2", "bfloat16", 1, 8).to_dict(), "fits": "yes"}
    assert refusals.flag_cannot_run(dict(row), "cuda")["fits"] == "yes"
    flagged = refusals.flag_cannot_run(dict(row), "cpu")
    assert flagged["fits"] == "unsupported"
    assert flagged["reason"] == static_unsupported(Cell.from_mapping(row), "cpu")
    assert predict.cannot_run(Cell("m", "none", "sdpa", "float32", 1, 8)) is None
    assert predict.cannot_run(Cell("m", "none", "sdpa-flash", "float32", 1, 8))


def test_the_predictor_flags_exactly_the_decode_references_unsupported_cells():
    # Every cell of the H200 decode reference (112: forced SDPA backends, FA2 graphs, ...):
    # the predictor says `unsupported` where, and only where, the GPU run did.
    from llmbench.predict.architecture import model_config_for

    models = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]
    folder = REPO / "results/reference/h200/decode/cells"
    statuses = {}
    for path in sorted(folder.rglob("*.json")):
        record = json.loads(path.read_text())
        cell = Cell.from_mapping(record["cell"])
        config = model_config_for(cell.model, models, REPO)
        statuses[path.relative_to(folder).as_posix()] = (
            record["status"],
            predict.cannot_run(cell, "cuda", config),
        )
    assert len(statuses) == 112
    wrong = {k: v for k, v in statuses.items() if (v[0] == "unsupported") != (v[1] is not None)}
    assert not wrong
    assert sum(v[0] == "unsupported" for v in statuses.values()) == 24


def test_forced_efficient_sdpa_is_refused_only_for_grouped_query_models():
    gqa = {"model_type": "mistral", "num_attention_heads": 32, "num_key_value_heads": 8,
           "sliding_window": None}  # fmt: skip
    mha = {**gqa, "num_key_value_heads": 32}
    cell = Cell("m", "none", "sdpa-efficient", "bfloat16", 1, 4096)
    assert "grouped-query" in predict.cannot_run(cell, "cuda", gqa)
    assert predict.cannot_run(cell, "cuda", mha) is None
    assert predict.cannot_run(cell, "cuda", None) is None  # unknown heads: no claim
    # a prompt longer than the sliding window gets a mask: K/V repeated, the kernel runs
    assert predict.cannot_run(cell, "cuda", {**gqa, "sliding_window": 2048}) is None


def test_forced_sdpa_kernels_and_a_sliding_window():
    # transformers builds a window mask once kv_length >= sliding_window (masking_utils
    # _ignore_causal_mask_sdpa): from there K/V are repeated (efficient runs) and flash,
    # which takes no mask, is refused; a hybrid family's full layers never get one.
    gqa = {"model_type": "mistral", "num_attention_heads": 32, "num_key_value_heads": 8,
           "sliding_window": None}  # fmt: skip
    v01 = {**gqa, "sliding_window": 4096}
    efficient = Cell("m", "none", "sdpa-efficient", "bfloat16", 1, 4096)
    assert predict.cannot_run(efficient, "cuda", v01) is None  # at the window: a mask
    assert predict.cannot_run(Cell.from_mapping({**efficient.to_dict(), "seq": 4095}), "cuda", v01)
    gemma = {"model_type": "gemma2", "num_attention_heads": 16, "num_key_value_heads": 8,
             "sliding_window": 4096}  # fmt: skip
    gemma_cell = Cell("g", "none", "sdpa-efficient", "bfloat16", 1, 8192)
    assert "grouped-query" in predict.cannot_run(gemma_cell, "cuda", gemma)
    flash = Cell("m", "none", "sdpa-flash", "bfloat16", 1, 4096)
    assert "reached in prefill" in predict.cannot_run(flash, "cuda", v01)
    short = Cell.from_mapping({**flash.to_dict(), "seq": 4080})
    assert predict.cannot_run(short, "cuda", v01) is None  # no decode tokens: never reached
    assert "reached in decode" in predict.cannot_run(short, "cuda", v01, decode_tokens=32)
    assert predict.cannot_run(flash, "cuda", gqa, decode_tokens=32) is None  # no window
    # a Mistral config.json without the key has MistralConfig's default 4096-token window
    unset = {k: v for k, v in gqa.items() if k != "sliding_window"}
    assert "reached in prefill" in predict.cannot_run(flash, "cuda", unset)


def test_a_window_the_config_turns_off_is_no_window():
    # Qwen1.5-MoE's config carries sliding_window 32768 with use_sliding_window false: no mask
    moe = {"model_type": "qwen2_moe", "num_attention_heads": 16, "num_key_value_heads": 16,
           "sliding_window": 32768, "use_sliding_window": False}  # fmt: skip
    flash = Cell("q", "none", "sdpa-flash", "bfloat16", 1, 32768)
    assert predict.cannot_run(flash, "cuda", moe, decode_tokens=32) is None
    assert predict.cannot_run(flash, "cuda", {**moe, "use_sliding_window": True}) is not None


def test_a_max_memory_under_the_configs_single_device_map_is_unsupported():
    capped = {**Cell("m", "none", "sdpa", "bfloat16", 1, 8, max_memory="8GiB").to_dict()}
    row = refusals.flag_cannot_run(dict(capped), "cuda", None, 0, configured_device_map="single")
    assert row["fits"] == "unsupported" and "plans none" in row["reason"]
    assert refusals.flag_cannot_run(dict(capped), "cuda", None, 0)["reason"] == ""


def test_a_learned_position_model_cannot_run_past_its_table():
    # the H200 families reference's OPT-6.7B 2048-token cells failed in decode
    opt = json.loads((REPO / "config/models/opt-6.7b.json").read_text())
    cell = Cell("opt-6.7b", "none", "sdpa", "bfloat16", 1, 2048)
    assert predict.cannot_run(cell, "cuda", opt) is None  # prefill only: 2048 positions
    reason = predict.cannot_run(cell, "cuda", opt, decode_tokens=32)
    assert "has 2048 rows" in reason and "need 2079 positions" in reason
    shorter = Cell("opt-6.7b", "none", "sdpa", "bfloat16", 1, 2017)
    assert predict.cannot_run(shorter, "cuda", opt, decode_tokens=32) is None
    llama = {**opt, "model_type": "llama"}  # rotary positions: no table to run out of
    assert predict.cannot_run(cell, "cuda", llama, decode_tokens=32) is None
