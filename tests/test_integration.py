"""The smoke grid through Snakemake, end to end on the CPU: cells, tables, figures, report."""

import json

import pandas as pd
import pytest
from conftest import HEAD, snakemake

from llmbench.record.cell import read_cell_result

pytestmark = pytest.mark.integration


def test_every_cell_has_a_valid_json_with_the_expected_status(smoke_run):
    cells = sorted((smoke_run / "results" / "cells").rglob("*.json"))
    assert len(cells) == 23
    statuses = {}
    for path in cells:
        result = read_cell_result(path)
        statuses[path.relative_to(smoke_run / "results" / "cells").as_posix()] = result["status"]
    for name, status in statuses.items():
        if "/flash_attention_2/" in name:
            assert status == "unsupported", name
        elif "/nf4-not-passed/" in name:
            assert status == "check_failed", name
        else:
            assert status == "ok", name


def test_tables_have_one_row_per_cell_and_measurements(smoke_run):
    table = pd.read_csv(smoke_run / "results" / "tables" / "cells.csv")
    assert len(table) == 23
    assert pd.read_parquet(smoke_run / "results" / "tables" / "cells.parquet").shape == table.shape
    measured = table[table.status == "ok"]
    assert (measured.prefill_ms_p50 > 0).all() and (measured.decode_ms_per_token_p50 > 0).all()
    assert (measured.ttft_ms > 0).all() and (measured.tokens_per_s > 0).all()
    assert measured.prefill_host_peak_rss_gib.notna().all()
    assert measured.prefill_peak_allocated_gib.isna().all()  # no CUDA numbers on a CPU run
    assert (measured.n_devices == 0).all()
    nf4 = table[(table.quant == "nf4") & (table.status == "ok")]
    assert (nf4.quant_applied == "nf4").all() and (nf4.bnb_linear_layers == 14).all()
    as_written = table[table.quant == "nf4-not-passed"].iloc[0]
    assert as_written.quant_applied == "none" and "never passed" in as_written.error
    fa2 = table[table.attn == "flash_attention_2"]
    assert (fa2.phase == "setup").all() and fa2.error.str.contains("CUDA").all()
    seed_rows = table[table.seed_case.notna()]
    assert len(seed_rows) == 5


def test_figures_exist_as_png_and_svg(smoke_run):
    figures = smoke_run / "results" / "figures"
    for name in ("seed_comparison", "memory_vs_seq", "latency_vs_seq", "status_map"):
        assert (figures / f"{name}.png").stat().st_size > 10_000, name
        assert "<svg" in (figures / f"{name}.svg").read_text()[:2000]


def test_cell_json_records_environment_and_timing(smoke_run):
    path = next(
        (smoke_run / "results" / "cells" / "tiny-mistral" / "none" / "sdpa").rglob("*.json")
    )
    result = json.loads(path.read_text())
    assert result["environment"]["packages"]["transformers"]
    assert result["environment"]["git"]["commit"] == HEAD
    breakdown = result["timing_breakdown"]
    assert breakdown["wall_s"] >= breakdown["load_s"] + breakdown["measure_s"]
    assert result["latency"]["prefill"]["count"] == result["settings"]["measurement"]["repeats"]
    chosen = result["checks"]["attention"]["sdpa_backend_chosen"]  # an sdpa cell
    assert set(chosen) == {"prefill", "decode"} and "unknown" not in " ".join(chosen.values())


def test_cells_are_forked_from_the_warm_start_server(smoke_run):
    """config warm_start: the run's server forks cells once its preload is done (the first
    cells may start before that, and spawn)."""
    methods = [
        json.loads(p.read_text())["timing_breakdown"]["start_method"]
        for p in (smoke_run / "results" / "cells").rglob("*.json")
    ]
    assert all(m == "fork from warm-start server" or m.startswith("spawn") for m in methods)
    assert methods.count("fork from warm-start server") >= len(methods) // 2
    assert "warmstart_preload" in (smoke_run / "logs" / "warmstart.log").read_text()


def test_rerun_after_a_lost_cell_redoes_only_that_cell(smoke_run):
    victim = (
        smoke_run
        / "results"
        / "cells"
        / "tiny-llama"
        / "none"
        / "sdpa"
        / "bfloat16"
        / "b2_s256.json"
    )
    victim.unlink()
    process = snakemake(smoke_run, "-n", "--config", "grid=smoke")
    assert "measure_cell        1" in process.stdout.replace("\t", " ") or " 1" in process.stdout
    counts = process.stdout[process.stdout.index("Job stats:") :]
    assert "materialize_model" not in counts and "prequantize_model" not in counts
    snakemake(smoke_run, "--config", "grid=smoke")
    assert victim.is_file()


def test_report_renders(smoke_run):
    snakemake(smoke_run, "--config", "grid=smoke", "--report", "report.html")
    assert (smoke_run / "report.html").stat().st_size > 10_000
