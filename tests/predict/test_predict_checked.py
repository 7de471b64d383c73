"""Whether a prediction was checked on a GPU (``llmbench.predict.checked``)."""

from __future__ import annotations

import csv
import json

from predict_fixtures import REPO

from llmbench.predict.checked import (
    FOUR_BIT_COMPUTE,
    KEY,
    REFERENCE_DECODE,
    checked,
    measured_groups,
    reference_groups,
)

COLUMNS = [*KEY, "checkpoint_kind", "batch", "seq", "status", "n_devices"] + [
    f"{phase}_measured_over_predicted" for phase in ("load", "load_peak", "prefill", "decode")
]


def row(**values):
    base = dict(
        model="m",
        quant="none",
        bnb_compute="config",
        int8_threshold="default",
        kv_cache="model",
        attn="sdpa",
        dtype="bfloat16",
        decode_mode="eager",
        device_map="config",
        max_memory="none",
        batch=1,
        seq=1024,
        status="ok",
        load_measured_over_predicted=1.0,
        load_peak_measured_over_predicted=1.0,
        prefill_measured_over_predicted=1.0,
        decode_measured_over_predicted=1.0,
    )
    return {**base, **values}


def groups_of(tmp_path, rows):
    table = tmp_path / "ref" / "gpu" / "run" / "tables" / "cells.csv"
    table.parent.mkdir(parents=True)
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return measured_groups([table], tmp_path / "ref")


def test_a_measured_setting_is_checked_within_its_shapes_only(tmp_path):
    groups = groups_of(
        tmp_path,
        [
            row(batch=1, seq=1024, decode_measured_over_predicted=1.004),
            row(batch=8, seq=8192),
            row(quant="int8", status="oom", load_measured_over_predicted=""),
        ],
    )
    verdict, note = checked(row(batch=4, seq=4096), groups)
    assert verdict == "yes" and note == "2 measured cells (gpu/run), worst 0.40 %"
    verdict, note = checked(row(batch=16, seq=4096), groups)
    assert verdict == "shape"
    assert note.endswith("none around batch 16 x 4096 (measured batch 1-8, sequence 1024-8192)")
    # an out-of-memory cell has no ratios: int8 was never checked
    assert checked(row(quant="int8"), groups) == (
        "no",
        "m never measured with quant int8; this cell ran out of memory on gpu/run",
    )
    assert checked(row(model="other"), groups)[1].startswith("model other never measured")


def test_a_load_peak_off_by_more_than_the_bar_fails_its_group(tmp_path):
    # the load's own peak counts like the other phases (it is one in the fit rule)
    groups = groups_of(
        tmp_path, [row(), row(batch=8, seq=8192, load_peak_measured_over_predicted=1.03)]
    )
    verdict, note = checked(row(batch=4, seq=4096), groups)
    assert verdict == "no" and "worst 3.00 %: off by more than 1 %" in note


def test_measured_cells_must_enclose_the_row_not_just_span_its_batch_and_length(tmp_path):
    # 1 x 32768 and 16 x 512 were measured: 16 x 32768 is beyond both, 8 x 512 between them
    groups = groups_of(tmp_path, [row(batch=1, seq=32768), row(batch=16, seq=512)])
    assert checked(row(batch=16, seq=32768), groups)[0] == "shape"
    assert checked(row(batch=2, seq=1024), groups)[0] == "shape"  # nothing at or below both
    enclosing = groups_of(tmp_path / "b", [row(batch=1, seq=512), row(batch=16, seq=32768)])
    assert checked(row(batch=8, seq=4096), enclosing)[0] == "yes"


def test_an_out_of_memory_cell_and_another_decode_length_are_said(tmp_path):
    oom = row(batch=4, seq=8192, status="oom", load_measured_over_predicted="")
    groups = groups_of(tmp_path, [row(), row(batch=8, seq=8192), oom])
    verdict, note = checked(row(batch=4, seq=8192), groups)
    assert verdict == "yes" and note.endswith("; this cell ran out of memory on gpu/run")
    verdict, note = checked(row(batch=4, seq=8192), groups, decode=(2048, 4))
    assert verdict == "shape" and "this run decodes 2048 (4)" in note


def test_a_cell_quantized_on_load_checks_only_rows_that_quantize_on_load(tmp_path):
    # the families reference's Mistral-7B-v0.1 nf4 cell loaded the bf16 checkpoint and
    # quantized it (checkpoint_kind base): it backs no pre-quantized prediction
    on_load = row(quant="nf4", bnb_compute="bfloat16", checkpoint_kind="base")
    groups = groups_of(tmp_path, [on_load])
    verdict, note = checked(row(quant="nf4", quantized_on_load=False), groups)
    assert (verdict, note) == ("no", "m never measured with quantized_on_load no")
    assert checked(row(quant="nf4", quantized_on_load=True), groups)[0] == "yes"
    # a pre-quantized load, recorded or (older tables) assumed, backs the other kind only
    for kind in ("prequantized", ""):
        prequantized = groups_of(
            tmp_path / (kind or "none"), [row(quant="nf4", checkpoint_kind=kind)]
        )
        assert checked(row(quant="nf4", quantized_on_load=False), prequantized)[0] == "yes"
        assert checked(row(quant="nf4", quantized_on_load=True), prequantized)[0] == "no"
    # unquantized cells load the same way whatever the checkpoint is called
    plain = groups_of(tmp_path / "plain", [row(checkpoint_kind="base")])
    assert checked(row(quantized_on_load=False), plain)[0] == "yes"


def test_a_cell_spread_over_gpus_checks_nothing(tmp_path):
    groups = groups_of(tmp_path, [row(n_devices=2)])
    assert checked(row(), groups)[0] == "no"


def test_a_combination_of_measured_settings_names_every_closest_one(tmp_path):
    groups = groups_of(tmp_path, [row(attn="flash_attention_2"), row(quant="int8")])
    verdict, note = checked(row(quant="int8", attn="flash_attention_2"), groups)
    assert verdict == "no" and "never this combination" in note
    # both measured cells differ in one setting: both are named
    assert "quant (int8 here, none there)" in note
    assert "attn (flash_attention_2 here, sdpa there)" in note


def test_a_group_with_a_cell_off_by_more_than_one_percent_checks_nothing(tmp_path):
    groups = groups_of(tmp_path, [row(), row(batch=2, prefill_measured_over_predicted=0.97)])
    verdict, note = checked(row(), groups)
    assert verdict == "no" and "worst 3.00 %" in note and "off by more than 1 %" in note


def test_a_4bit_cell_of_the_configs_compute_dtype_matches_its_explicit_spelling(tmp_path):
    groups = groups_of(tmp_path, [row(quant="nf4", bnb_compute="bfloat16")])
    assert checked(row(quant="nf4", bnb_compute="config"), groups)[0] == "yes"
    assert checked(row(quant="nf4", bnb_compute="config"), groups, "float32")[0] == "no"
    assert checked(row(quant="nf4", bnb_compute="float32"), groups)[0] == "no"


def test_every_committed_reference_ran_the_assumed_compute_dtype_and_decode_length():
    # FOUR_BIT_COMPUTE is what bnb_compute "config" meant in the references' cells, and
    # every one decoded REFERENCE_DECODE tokens.
    settings = [
        json.loads(path.read_text()).get("settings") or {}
        for path in (REPO / "results/reference").rglob("cells/**/*.json")
    ]
    assert {s.get("bnb_4bit_compute_dtype") for s in settings} == {FOUR_BIT_COMPUTE}
    decode = {
        (s["measurement"]["decode_tokens"], s["measurement"]["decode_warmup_tokens"])
        for s in settings
    }
    assert decode == {REFERENCE_DECODE}


def test_the_references_check_fp4_and_not_an_unmeasured_family():
    groups = reference_groups(REPO)
    fp4 = row(model="mistral-7b-v0.3", quant="fp4", bnb_compute="bfloat16", seq=8192)
    verdict, note = checked(fp4, groups)
    assert verdict == "yes" and "h200/quant" in note
    llama = row(model="llama-3.1-8b")
    assert checked(llama, groups)[0] == "no"
