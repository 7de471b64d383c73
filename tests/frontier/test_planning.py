"""Planning (llmbench.frontier.planning): search names, paths and cells, the plan of a
section, the configs, and the CPU fallback to the tiny frontier."""

from __future__ import annotations

import re

import pytest
import yaml
from frontier_fakes import TINY_SECTION

from llmbench import frontier
from llmbench.frontier import (
    Search,
)
from llmbench.grid.files import InputError


def test_search_names_paths_and_cells():
    search = Search("tiny-mistral", "nf4", "sdpa", "bfloat16", "seq", 4)
    assert search.name == "seq_b4"
    assert search.relpath == "tiny-mistral/nf4/sdpa/bfloat16/seq_b4.json"
    assert search.cell(1024).relpath == "tiny-mistral/nf4/sdpa/bfloat16/b4_s1024.json"
    other = Search("tiny-mistral", "none", "eager", "bfloat16", "batch", 1024)
    assert other.name == "batch_s1024"
    assert other.cell(8).relpath == "tiny-mistral/none/eager/bfloat16/b8_s1024.json"
    wildcards = {"model": "tiny-mistral", "quant": "nf4", "attn": "sdpa", "dtype": "bfloat16"}
    assert Search.from_wildcards({**wildcards, "search": "seq_b4"}) == search
    with pytest.raises(ValueError):
        Search.from_wildcards({**wildcards, "search": "seq_s4"})
    with pytest.raises(ValueError):
        Search("tiny-mistral", "nf5", "sdpa", "bfloat16", "seq", 4)


def test_plan_covers_both_axes(repo):
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    searches = frontier.plan(TINY_SECTION, config["models"])
    per_config = len(TINY_SECTION["batch"]) + len(TINY_SECTION["seq"])
    assert len(searches) == per_config * len(TINY_SECTION["quant"]) * len(TINY_SECTION["attn"])
    assert {s.axis for s in searches} == {"seq", "batch"}
    h100 = frontier.plan(config["frontier"], config["models"])
    # quant {none, nf4} x attn x (batch {1, 2, 4} + seq {32768})
    assert len(h100) == 2 * 3 * (3 + 1)
    with pytest.raises(ValueError, match="not defined"):
        frontier.plan({**TINY_SECTION, "models": ["nope"]}, config["models"])


def test_configs_validate(repo):
    from llmbench.grid.schemas import validate_document

    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    validate_document(config, "config.schema.yaml", where="config.yaml")
    validate_document({**config, "frontier": TINY_SECTION}, "config.schema.yaml", where="tiny")
    broken = {**config, "frontier": {**TINY_SECTION, "stepp": 3}}
    with pytest.raises(ValueError, match="stepp"):
        validate_document(broken, "config.schema.yaml", where="broken")


def test_cpu_host_falls_back_to_the_tiny_frontier(repo):
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    config_dir = repo / "config"
    choice = frontier.choose_section(config, False, config_dir)
    assert choice.section == TINY_SECTION and "frontier-tiny.yaml" in choice.message
    assert frontier.choose_section(config, True, config_dir).section == config["frontier"]
    explicit = {**config, "frontier": TINY_SECTION}  # --configfile config/frontier-tiny.yaml
    assert frontier.choose_section(explicit, False, config_dir).message is None
    assert frontier.choose_section({**config, "on_missing_gpu": "ignore"}, False, config_dir)
    with pytest.raises(InputError, match="frontier"):
        frontier.choose_section({**config, "on_missing_gpu": "fail"}, False, config_dir)


def test_a_quantized_kv_cache_search_names_itself_and_its_probes(repo):
    search = Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 1, "quanto-int4")
    assert search.name == "seq_b1_kv-quanto-int4"
    assert search.relpath == "tiny-mistral/none/sdpa/bfloat16/seq_b1_kv-quanto-int4.json"
    assert (
        search.cell(4096).relpath == "tiny-mistral/none/sdpa/bfloat16/b1_s4096_kv-quanto-int4.json"
    )
    wildcards = {"model": "tiny-mistral", "quant": "none", "attn": "sdpa", "dtype": "bfloat16"}
    assert Search.from_wildcards({**wildcards, "search": search.name}) == search
    with pytest.raises(ValueError, match="_kv-"):
        Search.from_wildcards({**wildcards, "search": "seq_b1_decode-graph"})
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    default = frontier.plan(TINY_SECTION, config["models"])
    both = frontier.plan({**TINY_SECTION, "kv_cache": ["model", "hqq-int4"]}, config["models"])
    assert {s.kv_cache for s in default} == {"model"}
    assert len(both) == 2 * len(default) and set(default) < set(both)


def test_an_expandable_segments_search_names_itself_and_its_probes(repo):
    search = Search(
        "tiny-mistral", "none", "eager", "bfloat16", "seq", 2, "model", "expandable_segments"
    )
    assert search.name == "seq_b2_alloc-expandable"
    assert (
        search.cell(8192).relpath
        == "tiny-mistral/none/eager/bfloat16/b2_s8192_alloc-expandable.json"
    )
    assert search.cell(8192).allocator == "expandable_segments"
    wildcards = {"model": "tiny-mistral", "quant": "none", "attn": "eager", "dtype": "bfloat16"}
    assert Search.from_wildcards({**wildcards, "search": search.name}) == search
    both_axes = Search(
        "tiny-mistral", "none", "sdpa", "bfloat16", "seq", 1, "hqq-int4", "expandable_segments"
    )
    assert both_axes.name == "seq_b1_alloc-expandable_kv-hqq-int4"
    assert (
        Search.from_wildcards({**wildcards, "attn": "sdpa", "search": both_axes.name}) == both_axes
    )
    pattern = re.compile(
        r"(seq_b[1-9][0-9]*|batch_s[1-9][0-9]*)(_alloc-expandable)?(_kv-[a-z0-9-]+)?"
    )
    smk = (repo / "workflow/rules/frontier.smk").read_text()
    assert pattern.pattern in smk and pattern.fullmatch(both_axes.name)  # the rule accepts it
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    default = frontier.plan(TINY_SECTION, config["models"])
    both = frontier.plan(
        {**TINY_SECTION, "allocator": ["default", "expandable_segments"]}, config["models"]
    )
    assert {s.allocator for s in default} == {"default"}
    assert len(both) == 2 * len(default) and set(default) < set(both)
