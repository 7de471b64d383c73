"""The report's first page: landing data from a cells table, and the templates that show it
(workflow/report/workflow.rst, the figure captions), rendered as Snakemake renders them."""

import csv
import textwrap
import warnings
from types import SimpleNamespace

import pytest

from llmbench.report.landing import NO_DATE, landing, rst_text

SEED = "results/reference/h100/seed"
REPORT = "workflow/report"


@pytest.fixture
def seed_page(repo, monkeypatch):
    monkeypatch.chdir(repo)
    return landing(SEED, figures_dir="results/redrawn/reference/h100/seed/figures")


def test_committed_seed_tables_give_the_answer_in_numbers(seed_page):
    page = seed_page
    assert page["found"] and page["n_cells"] == 9
    assert page["devices"] == "NVIDIA H100 80GB HBM3" and page["device_label"] == "GPU"
    assert page["date"] == rst_text(NO_DATE)
    assert page["commits"] == "commit ac25f1019df7"
    assert page["statuses"] == [
        {"status": "ok", "cells": 7},
        {"status": "unsupported", "cells": 1},
        {"status": r"check\_failed", "cells": 1},
    ]
    seed = [(r["case"], r["variant"], r["status"], r["load_allocated_gib"]) for r in page["seed"]]
    assert seed == [
        ("1 standard", "intended", "ok", "13.50"),
        ("2 bitsandbytes nf4", "intended", "ok", "4.16"),
        ("3 nf4 + FlashAttention-2", "intended", "ok", "4.16"),
        ("1 standard", "written", "ok", "27.00"),
        ("2 bitsandbytes nf4", "written", r"check\_failed", "27.00"),
        ("3 nf4 + FlashAttention-2", "written", "unsupported (prefill)", "4.66"),
    ]
    first, last = page["seed"][0], page["seed"][-1]
    assert (first["prefill_peak_allocated_gib"], first["prefill_ms_p50"]) == ("14.96", "183.6")
    # case 3 as written stopped in prefill: its load ran, its prefill did not
    assert (last["prefill_peak_allocated_gib"], last["prefill_ms_p50"]) == ("—", "—")
    assert page["caption"] == (
        "GPU: NVIDIA H100 80GB HBM3, date not recorded in the cells (see the run's README), "
        "commit ac25f1019df7."
    )


def write_cells(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


def cell(status="ok", **extra):
    row = {"status": status, "device": "cuda", "device_name": "NVIDIA H200"}
    return {**row, "git_commit": "0123456789abcdef0123", **extra}


@pytest.mark.parametrize(
    "dates, shown",
    [
        (["2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z"], "2026-11-29"),
        (["2026-11-29T23:59:00Z", "2026-12-01T00:01:00Z"], "2026-11-29 to 2026-12-01"),
        (["2026-11-29T10:00:00Z", ""], "2026-11-29 (1 of 2 cells record a date)"),
        (["", ""], NO_DATE),
    ],
)
def test_date_is_the_range_of_the_cells_finished_at(tmp_path, dates, shown):
    write_cells(tmp_path / "tables/cells.csv", [cell(finished_at=d) for d in dates])
    page = landing(tmp_path)
    assert page["date"] == rst_text(shown)
    measured = f"measured {shown}" if shown != NO_DATE else f"date {NO_DATE}"
    assert page["caption"] == rst_text(f"GPU: NVIDIA H200, {measured}, commit 0123456789ab.")


def test_statuses_in_a_fixed_order_and_several_commits_named(tmp_path):
    rows = [cell("oom"), cell("ok"), cell("weird"), cell("ok", git_commit="fedcba9876543210")]
    write_cells(tmp_path / "tables/cells.csv", rows)
    page = landing(tmp_path)
    assert [s["status"] for s in page["statuses"]] == ["ok", "oom", "weird"]
    assert page["commits"] == "2 commits: 0123456789ab, fedcba987654"
    assert page["seed"] == []


def test_a_folder_without_a_cells_table_says_so(tmp_path):
    page = landing(tmp_path / "results")
    assert not page["found"] and page["statuses"] == [] and page["caption"] == ""
    assert "no cells table" in page["summary"]


# -- the templates, rendered the way snakemake.report renders them (Snakemake 9.27) ----------

RST_LINKS = textwrap.dedent(
    """

    .. _Workflow: javascript:show_panel('workflow')
    .. _Statistics: javascript:show_panel('statistics')
    {% for cat, catresults in categories|dictsort %}
    .. _{{ cat.name }}: javascript:app.showCategory('{{ cat.name|urlencode }}')
    {% endfor %}
    {% for res in files %}
    .. _{{ res.target }}: javascript:app.showResultInfo('{{ res.path|urlencode }}')
    {% endfor %}
    """
)


def render(template, **context):
    """Jinja2 as Snakemake sets it up, then docutils; a docutils warning is an error here."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    env = Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(template + RST_LINKS).render(categories={}, **context)
    overrides = {"halt_level": 2, "report_level": 2}
    with warnings.catch_warnings():  # writer_name, as Snakemake calls it, is deprecated
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        parts = publish_parts(text, writer_name="html", settings_overrides=overrides)
    return parts["html_body"]


def report_files(*names):
    return [SimpleNamespace(target=name, path=f"results/x/{name}") for name in names]


@pytest.mark.parametrize("items", [("seed_comparison.png", "cells.csv"), ()])
def test_first_page_shows_summary_statuses_and_seed_numbers(repo, seed_page, items):
    template = (repo / REPORT / "workflow.rst").read_text()
    snakemake = SimpleNamespace(config={"_landing": seed_page})
    html = render(template, snakemake=snakemake, files=report_files(*items))
    assert "<strong>results/reference/h100/seed</strong>: 9 cells, GPU NVIDIA H100 80GB" in html
    assert "date not recorded in the cells (see the run's README)" in html
    assert "Cells per status" in html
    assert '<th class="head">check_failed</th>' in html
    assert html.count("<tr>") == 2 + 7  # status table: head + counts; seed: head + 6 cells
    for number in ("13.50", "14.96", "183.6", "2263.9", "unsupported (prefill)"):
        assert f"<td>{number}</td>" in html
    linked = "showResultInfo('results/x/seed_comparison.png')" in html
    assert linked == bool(items) and ("showResultInfo('results/x/cells.csv')" in html) == linked


def test_first_page_without_tables_still_renders(repo, tmp_path):
    template = (repo / REPORT / "workflow.rst").read_text()
    snakemake = SimpleNamespace(config={"_landing": landing(tmp_path / "results")})
    html = render(template, snakemake=snakemake, files=[])
    assert "no cells table" in html and "<table" not in html


@pytest.mark.parametrize(
    "caption",
    [
        "seed_comparison",
        "memory_vs_seq",
        "latency_vs_seq",
        "status_map",
        "predicted_vs_measured",
        "decode_vs_floor",
        "frontier",
        "cells_table",
    ],
)
def test_every_caption_says_gpu_date_and_commit(repo, seed_page, caption):
    template = (repo / REPORT / f"{caption}.rst").read_text()
    root = "results/redrawn/reference/h100/seed"
    config = {"_landing": {**seed_page, "captions": {root: seed_page["caption"]}}}
    snakemake = SimpleNamespace(config=config, wildcards=SimpleNamespace(figures_root=root))
    html = render(template, snakemake=snakemake, files=report_files(f"{caption}.png"))
    assert (
        "GPU: NVIDIA H100 80GB HBM3, date not recorded in the cells (see the run's README), "
        "commit ac25f1019df7." in html
    )
    other = SimpleNamespace(config=config, wildcards=SimpleNamespace(figures_root="results"))
    assert "GPU:" not in render(template, snakemake=other, files=[])


def test_a_cpu_run_shows_host_rss_in_the_seed_table(tmp_path):
    row = {"status": "ok", "device": "cpu", "device_name": "AMD EPYC", "seed_case": "1 standard"}
    row.update(seed_variant="as written", load_host_rss_gib="0.3149", prefill_ms_p50="6.14")
    row.update(prefill_host_peak_rss_gib="0.3412", load_allocated_gib="")
    write_cells(tmp_path / "tables/cells.csv", [row])
    page = landing(tmp_path)
    assert page["device_label"] == "CPU" and page["memory"] == "host RSS"
    assert page["seed"] == [
        {
            "case": "1 standard",
            "variant": "written",
            "status": "ok",
            "load_allocated_gib": "0.31",
            "prefill_peak_allocated_gib": "0.34",
            "prefill_ms_p50": "6.1",
        }
    ]
    assert page["caption"] == rst_text(f"CPU: AMD EPYC, date {NO_DATE}, commit not recorded.")
