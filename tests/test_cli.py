"""Command-line helpers that move runs between results/ and a reference folder."""

import json
import os
import subprocess
import sys
import time

from conftest import REPO

from llmbench import cli

EXTENDED = REPO / "results" / "reference" / "h100" / "extended"
FRONTIER = REPO / "results" / "reference" / "h100" / "frontier"
CELL = "mistral-7b-v0.3/none/sdpa/bfloat16/b2_s3072.json"


def test_resume_copies_missing_cells_only_and_dates_them_now(tmp_path):
    target = tmp_path / "results"
    mine = target / "cells" / CELL
    mine.parent.mkdir(parents=True)
    mine.write_text('{"mine": true}')
    started = time.time()
    cells, files = cli.resume(EXTENDED, target, "extended")
    assert (cells, files) == (80, 0)  # 81 committed, one already here
    assert json.loads(mine.read_text()) == {"mine": True}  # never overwritten
    copied = sorted((target / "cells").rglob("*.json"))
    assert len(copied) == 81
    assert all(p.stat().st_mtime >= started - 1 for p in copied if p != mine)
    assert (target / "benchmarks" / "cells" / CELL.replace(".json", ".tsv")).exists() is False
    assert cli.resume(EXTENDED, target, "extended") == (0, 0)  # a second call adds nothing


def test_resume_brings_frontier_probes_and_searches(tmp_path):
    _, files = cli.resume(FRONTIER, tmp_path, "seed", frontier=True)
    probes = list((tmp_path / "frontier" / "probes").rglob("*.json"))
    searches = list((tmp_path / "frontier" / "searches").rglob("*.json"))
    assert files == len(probes) + len(searches) == 48 + 24


def test_publish_overwrites(tmp_path):
    cli.resume(EXTENDED, tmp_path, "extended")
    (tmp_path / "cells" / CELL).write_text("{}")
    target = tmp_path / "reference"
    assert cli.publish(tmp_path, target, "extended") == 81
    assert (target / "cells" / CELL).read_text() == "{}"


def test_cli_runs_as_an_installed_module(tmp_path):
    """README's ``python -m llmbench.cli`` works outside the repository and without src/ on
    PYTHONPATH: scripts/setup.sh and .ci/run install the package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "llmbench.cli", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "resume" in done.stdout
