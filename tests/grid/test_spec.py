"""Grid: validation of names and axes, expansion into cells, wildcard constraints."""

import re
from pathlib import Path

import pytest
import yaml

from llmbench.grid.schemas import SchemaError
from llmbench.grid.spec import (
    Cell,
    expand_blocks,
    expand_grid,
    load_grid,
    parse_variant,
    wildcard_constraints,
)

MODELS = {"tiny-mistral": {"architecture": "x.json"}, "m2": {"architecture": "y.json"}}


def block(**overrides):
    base = {
        "models": ["tiny-mistral"],
        "quant": ["none"],
        "attn": ["sdpa"],
        "dtype": ["bfloat16"],
        "batch": [1],
        "seq": [8],
    }
    return {**base, **overrides}


def write_grid(tmp_path: Path, document) -> Path:
    (tmp_path / "grids").mkdir(exist_ok=True)
    path = tmp_path / "grids" / "g.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_cell_paths_have_one_level_per_axis():
    cell = Cell("mistral-7b-v0.3", "nf4", "sdpa-math", "bfloat16", 2, 3072)
    assert cell.relpath == "mistral-7b-v0.3/nf4/sdpa-math/bfloat16/b2_s3072.json"
    assert cell.attn_implementation == "sdpa"
    assert cell.sdpa_backend == "math"
    assert Cell.from_mapping({**cell.to_dict(), "batch": "2", "seq": "3072"}) == cell


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model", "../etc", "model name"),
        ("model", "a/b", "model name"),
        ("quant", "int4", "quant 'int4' is not one of"),
        ("attn", "flash", "attn 'flash' is not one of"),
        ("dtype", "fp8", "dtype 'fp8' is not one of"),
        ("batch", 0, "batch must be a positive integer"),
        ("seq", -1, "seq must be a positive integer"),
    ],
)
def test_cell_rejects_bad_values_naming_the_axis(field, value, message):
    values = {
        "model": "m",
        "quant": "none",
        "attn": "sdpa",
        "dtype": "bfloat16",
        "batch": 1,
        "seq": 1,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        Cell(**{**values, field: value})


def test_blocks_expand_to_the_union_of_their_products():
    cells = expand_blocks(
        [
            block(quant=["none", "nf4"], attn=["eager", "sdpa"], batch=[1, 2]),
            block(quant=["none"], attn=["sdpa"], batch=[1]),  # already in the first block
            block(models=["m2"], seq=[8, 16]),
        ]
    )
    assert len(cells) == 2 * 2 * 2 + 2
    assert len(set(cells)) == len(cells)
    assert cells == sorted(cells)


def test_unsupported_combinations_are_kept_as_cells():
    cells = expand_blocks([block(attn=["flash_attention_2"], dtype=["float32"])])
    assert [c.attn for c in cells] == ["flash_attention_2"]


@pytest.mark.parametrize(
    "bad_block, key",
    [
        (block(batch=[0]), "blocks.0.batch.0"),
        (block(seq=[-5]), "blocks.0.seq.0"),
        (block(quant=["int3"]), "blocks.0.quant.0"),
        (block(attn=["flash"]), "blocks.0.attn.0"),
        (block(models=["../../etc"]), "blocks.0.models.0"),
    ],
)
def test_grid_file_errors_name_the_key(tmp_path, bad_block, key):
    write_grid(tmp_path, {"blocks": [bad_block]})
    with pytest.raises(SchemaError, match=re.escape(key)):
        load_grid("g", tmp_path, MODELS)


@pytest.mark.parametrize(
    "bad_block, message",
    [
        (block(seq=[256.0]), "blocks.0.seq.0: value 256.0 is not an integer"),
        (block(batch=[2.0]), "blocks.0.batch.0: value 2.0 is not an integer"),
        (block(seq=[float("nan")]), "blocks.0.seq.0: value nan is not a finite number"),
        (block(seq=[256.5]), "blocks.0.seq.0: value 256.5 is not of type integer"),
    ],
)
def test_a_float_where_a_grid_wants_a_whole_number_names_the_key(tmp_path, bad_block, message):
    # JSON Schema counts 256.0 as an integer; Cell does not: the grid's own check says so
    write_grid(tmp_path, {"blocks": [bad_block]})
    with pytest.raises(SchemaError, match=re.escape(message)):
        load_grid("g", tmp_path, MODELS)


def test_a_float_threshold_is_refused_with_its_spelling(tmp_path):
    # the schema's enum takes 4.0 for 4, then the cell's path would read "4.0"
    write_grid(tmp_path, {"blocks": [block(quant=["int8"], int8_threshold=[4.0])]})
    with pytest.raises(ValueError, match=r"blocks\[0\].int8_threshold: write 4, not 4.0"):
        load_grid("g", tmp_path, MODELS)


def test_a_seed_case_must_be_a_cell_of_the_grid(tmp_path):
    case = {"case": "1 standard", "variant": "as intended", "model": "tiny-mistral"}
    case.update(quant="none", attn="sdpa", dtype="bfloat16", batch=1, seq=8)
    write_grid(tmp_path, {"blocks": [block(seq=[8])], "seed_cases": [case]})
    assert load_grid("g", tmp_path, MODELS)["seed_cases"] == [case]
    # a misspelt shape would silently drop the case from the seed figure
    write_grid(tmp_path, {"blocks": [block(seq=[8])], "seed_cases": [{**case, "seq": 9}]})
    message = "seed_cases[0] ('1 standard', as intended): no cell of the grid's blocks is tiny-"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_grid("g", tmp_path, MODELS)
    write_grid(tmp_path, {"blocks": [block(seq=[8])], "seed_cases": [{**case, "attn": "spda"}]})
    with pytest.raises(SchemaError, match=re.escape("seed_cases.0.attn: 'spda' is not one of")):
        load_grid("g", tmp_path, MODELS)


def test_grid_naming_an_undefined_model_fails(tmp_path):
    write_grid(tmp_path, {"blocks": [block(models=["nope"])]})
    with pytest.raises(ValueError, match=r"blocks\[0\]\.models: model 'nope' is not defined"):
        load_grid("g", tmp_path, MODELS)


def test_missing_grid_lists_the_named_grids(tmp_path):
    write_grid(tmp_path, {"blocks": [block()]})
    with pytest.raises(ValueError, match="named grids: g"):
        load_grid("absent", tmp_path, MODELS)


def test_shipped_grids_have_the_documented_sizes(repo):
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    sizes = {
        g: len(expand_grid(load_grid(g, repo / "config", config["models"])))
        for g in ("seed", "extended", "smoke")
    }
    assert sizes["seed"] == 9
    assert sizes["extended"] == 3 * 3 * 3 * 3
    assert sizes["smoke"] >= 20


def test_wildcard_constraints_match_every_cell_path_and_nothing_else():
    constraints = wildcard_constraints()
    pattern = re.compile(
        "({model})/({quant})/({attn})/({dtype})/b({batch})_s({seq})\\.json".format(**constraints)
    )
    cell = Cell("qwen2.5-7b", "nf4-dq", "flash_attention_2", "float16", 4, 8192)
    assert pattern.fullmatch(cell.relpath)
    assert not pattern.fullmatch("m/int4/sdpa/bfloat16/b1_s1.json")
    assert not pattern.fullmatch("m/none/sdpa/bfloat16/b0_s1.json")


def test_optional_axes_default_and_keep_the_old_path():
    cell = Cell("m", "none", "sdpa", "bfloat16", 1, 512)
    assert (cell.decode_mode, cell.allocator) == ("eager", "default")
    assert cell.relpath == "m/none/sdpa/bfloat16/b1_s512.json"


def test_optional_axes_become_a_path_suffix_that_parses_back():
    cell = Cell("m", "nf4", "sdpa", "bfloat16", 4, 64, "graph", "expandable_segments")
    assert cell.relpath == "m/nf4/sdpa/bfloat16/b4_s64_decode-graph_alloc-expandable.json"
    wildcards = {
        "model": "m",
        "quant": "nf4",
        "attn": "sdpa",
        "dtype": "bfloat16",
        "batch": "4",
        "seq": "64",
        "variant": cell.variant,
    }
    assert Cell.from_mapping(wildcards) == cell
    pattern = re.compile(wildcard_constraints()["variant"])
    for variant in ("", "_decode-static", "_alloc-expandable", "_decode-graph_alloc-expandable"):
        assert pattern.fullmatch(variant)
    assert not pattern.fullmatch("_alloc-expandable_decode-graph")  # one order only


def test_an_unknown_suffix_or_value_is_refused():
    with pytest.raises(ValueError, match="not a known tag"):
        parse_variant("_decode-turbo")
    with pytest.raises(ValueError, match="decode_mode"):
        Cell("m", "none", "sdpa", "bfloat16", 1, 1, decode_mode="turbo")


def test_a_cell_json_without_the_optional_axes_reads_with_their_defaults():
    old = {"model": "m", "quant": "none", "attn": "eager", "dtype": "float32", "batch": 2, "seq": 8}
    assert Cell.from_mapping(old) == Cell("m", "none", "eager", "float32", 2, 8)


def test_blocks_expand_over_the_optional_axes_they_name():
    block = {
        "models": ["m"],
        "quant": ["none"],
        "attn": ["sdpa"],
        "dtype": ["bfloat16"],
        "batch": [1],
        "seq": [8],
    }
    assert [c.decode_mode for c in expand_blocks([block])] == ["eager"]
    modes = expand_blocks([{**block, "decode_mode": ["static", "graph"]}])
    assert sorted(c.decode_mode for c in modes) == ["graph", "static"]


def test_fp4_is_a_quant_of_its_own():
    cell = Cell("m", "fp4-dq", "sdpa", "bfloat16", 1, 8)
    assert cell.relpath == "m/fp4-dq/sdpa/bfloat16/b1_s8.json"
    assert re.fullmatch(wildcard_constraints()["quant"], "fp4")
    assert cell.compute_dtype_4bit("bfloat16") == "bfloat16"


@pytest.mark.parametrize(
    "quant, bnb_compute, int8_threshold, suffix",
    [
        ("nf4", "float32", "default", "_c-fp32"),
        ("fp4", "bfloat16", "default", "_c-bf16"),
        ("fp4-dq", "float16", "default", "_c-fp16"),
        ("int8", "config", "4", "_t4"),
        ("int8", "config", "10", "_t10"),
        ("int8", "config", "0", "_t0"),
    ],
)
def test_bnb_axes_become_a_path_suffix_that_parses_back(quant, bnb_compute, int8_threshold, suffix):
    cell = Cell(
        "m",
        quant,
        "sdpa",
        "bfloat16",
        2,
        64,
        "graph",
        bnb_compute=bnb_compute,
        int8_threshold=int8_threshold,
    )
    assert cell.variant == f"_decode-graph{suffix}"
    assert cell.relpath == f"m/{quant}/sdpa/bfloat16/b2_s64_decode-graph{suffix}.json"
    assert parse_variant(cell.variant) == {
        "decode_mode": "graph",
        **({"bnb_compute": bnb_compute} if bnb_compute != "config" else {}),
        **({"int8_threshold": int8_threshold} if int8_threshold != "default" else {}),
    }
    wildcards = {**cell.to_dict(), "variant": cell.variant}
    for axis in ("decode_mode", "allocator", "bnb_compute", "int8_threshold"):
        del wildcards[axis]
    assert Cell.from_mapping(wildcards) == cell
    assert re.fullmatch(wildcard_constraints()["variant"], cell.variant)


def test_bnb_axes_resolve_to_what_the_cell_passes():
    assert Cell("m", "nf4", "sdpa", "bfloat16", 1, 8).compute_dtype_4bit("float16") == "float16"
    chosen = Cell("m", "nf4", "sdpa", "bfloat16", 1, 8, bnb_compute="float32")
    assert chosen.compute_dtype_4bit("bfloat16") == "float32"
    assert Cell("m", "int8", "sdpa", "bfloat16", 1, 8).compute_dtype_4bit("bfloat16") is None
    assert Cell("m", "int8", "sdpa", "bfloat16", 1, 8).llm_int8_threshold is None
    assert Cell("m", "int8", "sdpa", "bfloat16", 1, 8, int8_threshold="4").llm_int8_threshold == 4.0


def test_bad_bnb_axis_values_are_refused():
    with pytest.raises(ValueError, match="bnb_compute"):
        Cell("m", "nf4", "sdpa", "bfloat16", 1, 1, bnb_compute="fp8")
    with pytest.raises(ValueError, match="int8_threshold"):
        Cell("m", "int8", "sdpa", "bfloat16", 1, 1, int8_threshold="6")  # that is 'default'
    with pytest.raises(ValueError, match="not a known tag"):
        parse_variant("_c-fp8")


def test_blocks_expand_over_bnb_axes_with_numbers_as_yaml_reads_them(tmp_path):
    document = {
        "blocks": [
            block(quant=["nf4", "fp4"], bnb_compute=["bfloat16", "float32"]),
            block(quant=["int8"], int8_threshold=["default", 4, "0"]),
        ]
    }
    path = write_grid(tmp_path, document)
    cells = expand_grid(load_grid(str(path), tmp_path, MODELS))
    assert sorted(c.variant for c in cells) == sorted(
        ["_c-bf16", "_c-fp32", "_c-bf16", "_c-fp32", "", "_t4", "_t0"]
    )
    assert {c.int8_threshold for c in cells if c.quant == "int8"} == {"default", "4", "0"}


def test_a_threshold_outside_the_axis_fails_the_grid_schema(tmp_path):
    path = write_grid(tmp_path, {"blocks": [block(quant=["int8"], int8_threshold=[7])]})
    with pytest.raises(SchemaError, match="int8_threshold"):
        load_grid(str(path), tmp_path, MODELS)


@pytest.mark.parametrize(
    "kv, suffix, quantization",
    [
        ("quanto-int4", "_kv-quanto-int4", ("quanto", 4)),
        ("quanto-int2", "_kv-quanto-int2", ("quanto", 2)),
        ("hqq-int4", "_kv-hqq-int4", ("hqq", 4)),
        ("hqq-int2", "_kv-hqq-int2", ("hqq", 2)),
    ],
)
def test_a_quantized_kv_cache_is_a_path_suffix_that_parses_back(kv, suffix, quantization):
    cell = Cell("m", "int8", "sdpa", "bfloat16", 1, 8, int8_threshold="4", kv_cache=kv)
    assert cell.variant == f"_t4{suffix}" and cell.kv_quantization == quantization
    assert parse_variant(cell.variant) == {"int8_threshold": "4", "kv_cache": kv}
    pattern = re.compile("b1_s8{variant}".format(**wildcard_constraints()))
    assert pattern.fullmatch(f"b1_s8{cell.variant}")
    assert Cell("m", "none", "sdpa", "bfloat16", 1, 8).kv_quantization is None
    with pytest.raises(ValueError, match="kv_cache"):
        Cell("m", "none", "sdpa", "bfloat16", 1, 8, kv_cache="quanto-int3")  # quanto: 2 or 4


@pytest.mark.parametrize(
    "device_map, max_memory, suffix",
    [
        ("balanced", "none", "_dm-balanced"),
        ("balanced_low_0", "60GiB", "_dm-balanced_low_0_mm60GiB"),
        ("sequential", "8GiB", "_dm-sequential_mm8GiB"),
        ("config", "120GiB", "_mm120GiB"),
    ],
)
def test_placement_axes_become_a_path_suffix_that_parses_back(device_map, max_memory, suffix):
    cell = Cell("m", "none", "sdpa", "bfloat16", 1, 8, device_map=device_map, max_memory=max_memory)
    assert cell.variant == suffix
    assert Cell("m", "none", "sdpa", "bfloat16", 1, 8).variant == ""  # the default keeps its path
    wildcards = {**cell.to_dict(), "variant": cell.variant}
    for axis in ("device_map", "max_memory"):
        del wildcards[axis]
    assert Cell.from_mapping(wildcards) == cell
    assert re.fullmatch(wildcard_constraints()["variant"], cell.variant)


def test_placement_axes_resolve_to_what_the_cell_passes():
    cell = Cell("m", "none", "sdpa", "bfloat16", 1, 8)
    assert cell.device_map_policy("auto") == "auto" and cell.max_memory_bytes is None
    capped = Cell("m", "none", "sdpa", "bfloat16", 1, 8, device_map="single", max_memory="60GiB")
    assert capped.device_map_policy("auto") == "single"
    assert capped.max_memory_bytes == 60 * 2**30
    with pytest.raises(ValueError, match="max_memory"):
        Cell("m", "none", "sdpa", "bfloat16", 1, 8, max_memory="61GiB")
