"""The run summary (llmbench.report.summary) printed after Snakemake's own output: cells per
status, the slowest cells, where the tables and figures are, failures with their one-line
reason, missing cells, frontier probes; it never raises."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from conftest import REPO

from llmbench.grid.spec import Cell

SEED = REPO / "results" / "reference" / "h100" / "seed"
FRONTIER = REPO / "results" / "reference" / "h100" / "frontier"
MISSING = Cell("mistral-7b-v0.3", "none", "eager", "bfloat16", 2, 3072)


def seed_cells() -> list[Cell]:
    return sorted(
        Cell.from_mapping(json.loads(p.read_text())["cell"])
        for p in (SEED / "cells").rglob("*.json")
    )


@pytest.fixture
def run(tmp_path):
    """A results folder holding the committed seed cells but one, a table and one figure."""
    results = tmp_path / "results"
    shutil.copytree(SEED / "cells", results / "cells")
    (results / "cells" / MISSING.relpath).unlink()
    (results / "tables").mkdir()
    (results / "tables" / "cells.csv").write_text("model\n")
    (results / "figures").mkdir()
    for suffix in (".png", ".svg"):
        (results / "figures" / f"status_map{suffix}").write_text("")
    return results


def summarize(*args, **kwargs) -> list[str]:
    from llmbench.report import summary

    return summary.summarize(*args, **kwargs).splitlines()


def section(lines: list[str], label: str) -> list[str]:
    """The lines of one labelled part: its first line and the indented ones after it."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {label} "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i][2] != " "), len(lines))
    return lines[start:end]


def joined(lines: list[str], label: str) -> str:
    """One labelled part as one line, its wrapping undone."""
    return " ".join(" ".join(section(lines, label)).split())


def test_counts_each_status_of_the_grid(run):
    lines = summarize(run, seed_cells(), grid="seed")
    assert lines[0] == f"llmbench: run summary (grid seed, 9 cells, {run / 'cells'}/)"
    assert section(lines, "status") == ["  status   6 ok, 1 unsupported, 1 check_failed"]


def test_names_the_five_slowest_cells_by_wall_time(run):
    walls = {
        str(p.relative_to(run / "cells"))[:-5]: json.loads(p.read_text())["timing_breakdown"][
            "wall_s"
        ]
        for p in (run / "cells").rglob("*.json")
    }
    slowest = sorted(walls, key=walls.get, reverse=True)[:5]
    shown = section(summarize(run, seed_cells()), "slowest")
    assert [line.split()[-1] for line in shown] == slowest
    assert [float(line.split()[-4]) for line in shown] == [
        round(walls[n], 1) for n in slowest
    ]  # "<s> s wall <cell>"


def test_lists_only_the_tables_and_figures_that_exist(run):
    lines = summarize(run, seed_cells())
    assert joined(lines, "tables") == f"tables {run / 'tables'}/: cells.csv"
    assert joined(lines, "figures") == f"figures {run / 'figures'}/: status_map (.png, .svg)"
    shutil.rmtree(run / "figures")
    assert section(summarize(run, seed_cells()), "figures") == ["  figures  none yet"]
    # snakemake figures --config report_root=...: that folder's figures are listed too
    figures = joined(summarize(run, seed_cells(), report_roots=[SEED]), "figures")
    assert figures == (
        f"figures {SEED / 'figures'}/: decode_vs_floor, latency_vs_seq, memory_vs_seq, "
        "predicted_vs_measured, seed_comparison, status_map (.png, .svg)"
    )


def test_every_failure_with_its_one_line_reason(run):
    failures = section(summarize(run, seed_cells()), "not ok")
    assert failures[0] == "  not ok   2 cells:"
    expected = {}
    for path in (run / "cells").rglob("*.json"):
        result = json.loads(path.read_text())
        if result["status"] != "ok":
            expected[str(path.relative_to(run / "cells"))[:-5]] = (result["status"], result)
    assert len(failures) == 1 + len(expected) == 3
    for line in failures[1:]:
        status, name = line.split()[:2]
        assert expected[name.rstrip(":")][0] == status
        reason = expected[name.rstrip(":")][1]["reason"]
        assert reason.startswith(line.split(": ", 1)[1].rstrip("…"))
        assert len(line) < 200


def test_one_cell_is_counted_in_the_singular(run):
    """A one-cell target whose cell failed: "1 cell", never "1 cells"."""
    failed = next(
        Cell.from_mapping(result["cell"])
        for p in sorted((run / "cells").rglob("*.json"))
        if (result := json.loads(p.read_text()))["status"] != "ok"
    )
    lines = summarize(run, [failed], grid="seed")
    assert lines[0] == f"llmbench: run summary (grid seed, 1 cell, {run / 'cells'}/)"
    assert section(lines, "not ok")[0] == "  not ok   1 cell:"
    assert joined(summarize(run, [MISSING]), "missing").startswith(
        "missing 1 of the grid's 1 cell has no JSON"
    )


def test_says_which_cells_of_the_grid_are_missing(run):
    lines = summarize(run, seed_cells(), grid="seed")
    missing = joined(lines, "missing")
    assert missing.startswith("missing 1 of the grid's 9 cells has no JSON")
    assert missing.endswith(MISSING.relpath[:-5])
    # A single-cell target: the grid's other cells are named, a few, and counted.
    shutil.rmtree(run / "cells" / "mistral-7b-v0.3" / "nf4")
    missing = joined(summarize(run, seed_cells()), "missing")
    assert "5 of the grid's 9 cells have no JSON" in missing and "and 0 more" not in missing
    assert summarize(run / "nowhere", seed_cells())[1] == "  status   no cell JSON yet"


def test_an_unreadable_cell_json_is_reported_not_raised(run):
    broken = run / "cells" / seed_cells()[0].relpath
    broken.write_text("{")
    lines = summarize(run, seed_cells())
    assert "1 unreadable" in section(lines, "status")[0]
    assert any(
        f"unreadable    {seed_cells()[0].relpath[:-5]}: JSONDecodeError" in line for line in lines
    )


def test_frontier_probes_and_searches_are_counted(tmp_path):
    shutil.copytree(FRONTIER / "frontier", tmp_path / "frontier")
    statuses = [
        json.loads(p.read_text())["status"]
        for p in (tmp_path / "frontier" / "probes").rglob("*.json")
    ]
    searches = len(list((tmp_path / "frontier" / "searches").rglob("*.json")))
    line = section(summarize(tmp_path), "frontier")[0]
    ok, oom = statuses.count("ok"), statuses.count("oom")
    assert ok + oom == len(statuses)
    assert line == f"  frontier {len(statuses)} probes ({ok} ok, {oom} oom), {searches} searches"


def test_a_frontier_only_run_is_summarized_without_the_grid(tmp_path):
    # a run whose targets were frontier searches: the grid's cell status would say nothing
    # about it (on the H200 it said "missing 9 of the grid's 9 cells" after 17 searches)
    from llmbench.report import summary

    shutil.copytree(FRONTIER / "frontier", tmp_path / "frontier")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "frontier.csv").write_text("model\n")
    (tmp_path / "cells").mkdir()  # cells of another run: not mentioned
    lines = summary.summarize_frontier(tmp_path).splitlines()
    assert lines[0] == f"llmbench: frontier summary ({tmp_path / 'frontier'}/)"
    assert lines[1] == section(summarize(tmp_path), "frontier")[0]
    assert lines[2] == f"  files    {tmp_path / 'tables' / 'frontier.csv'}"
    assert len(lines) == 3 and not any("missing" in line or "status" in line for line in lines)
    assert summary.summarize_frontier(tmp_path / "empty").splitlines()[1:] == [
        "  frontier no probe or search yet"
    ]


def test_printing_never_raises(monkeypatch, run, capsys):
    from llmbench.report import summary

    summary.print_summary(run, seed_cells(), grid="seed")
    assert capsys.readouterr().err.startswith("llmbench: run summary (grid seed")

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(summary, "summarize", broken)
    summary.print_summary(run, seed_cells())
    assert capsys.readouterr().err == "llmbench: no run summary (RuntimeError: disk on fire)\n"
    closed = io.StringIO()
    closed.close()
    summary.print_summary(run, file=closed)  # nowhere to print: still no exception
