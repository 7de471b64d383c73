"""The frontier table (llmbench.frontier.tables) and figure, from searches run with a fake
runner."""

from __future__ import annotations

from frontier_fakes import TINY_SECTION, FakeRunner, fake_settings

from llmbench import frontier
from llmbench.frontier import (
    Search,
)


def test_table_and_figure(tmp_path):
    from llmbench.report import figures

    paths = []
    for quant, attn, batch, status in (
        ("none", "sdpa", 1, None),
        ("none", "sdpa", 4, None),
        ("none", "eager", 1, None),
        ("none", "flash_attention_2", 1, "unsupported"),
    ):
        search = Search("tiny-mistral", quant, attn, "bfloat16", "seq", batch)
        runner = FakeRunner(20_000 if attn == "sdpa" else 200_000, 0.5, status=status)
        document = frontier.run_search(
            search,
            section={**TINY_SECTION, "seq_min": 128, "seq_max": 8192, "step": 128},
            settings=fake_settings(),
            model_entry={"architecture": "config/models/tiny-mistral.json"},
            base_dir=None,
            prequantized_dir=None,
            probes_dir=tmp_path / "probes",
            out_path=tmp_path / "searches" / search.relpath,
            has_cuda=False,
            predictor=None,
            runner=runner,
            log=lambda message: None,
        )
        paths.append(tmp_path / "searches" / search.relpath)
        assert document["search"]["name"] == f"seq_b{batch}"
    table = frontier.table(paths)
    assert list(table.columns) == list(frontier.TABLE_COLUMNS)
    by_key = table.set_index(["attn", "batch"])
    assert by_key.loc[("sdpa", 1), "status"] == "above_max"
    assert by_key.loc[("flash_attention_2", 1), "status"] == "unsupported"
    assert by_key.loc[("eager", 1), "frontier"] == 2560
    csv = tmp_path / "frontier.csv"
    table.to_csv(csv, index=False)
    figures.draw_frontier(csv, str(tmp_path / "f.png"), str(tmp_path / "f.svg"))
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert "unsupported" in (tmp_path / "f.svg").read_text()


def test_the_kv_cache_column_appears_only_with_a_quantized_cache_search():
    from llmbench.frontier.tables import table_row

    document = {
        "search": {"model": "m", "quant": "none", "attn": "sdpa", "dtype": "bfloat16"},
        "probes": [],
        "step": 256,
        "frontier": None,
        "status": "oom",
        "first_fail": None,
        "largest_ok": None,
        "values_min": 256,
        "values_max": 512,
        "predicted": None,
        "n_probes": 0,
        "probes_run": 0,
        "probes_reused": 0,
        "max_probes": 2,
        "goal_probes": 2,
        "brute_force": 2,
    }
    for axis in ({"axis": "seq", "fixed": 1}, {"axis": "seq", "fixed": 1, "kv_cache": "model"}):
        assert "kv_cache" not in table_row(
            {**document, "search": {**document["search"], **axis}}, "p"
        )
    quantized = {**document["search"], "axis": "seq", "fixed": 1, "kv_cache": "hqq-int4"}
    assert table_row({**document, "search": quantized}, "p")["kv_cache"] == "hqq-int4"
