"""llmbench.predict.output: memory sizes from text, and the `llmbench predict` table and CSV
(without torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from predict_fixtures import REPO

from llmbench import GIB, predict


def test_parse_bytes():
    assert predict.parse_bytes("80GiB") == 80 * GIB
    assert predict.parse_bytes("80 gib") == 80 * GIB
    assert predict.parse_bytes("85GB") == 85 * 10**9
    assert predict.parse_bytes("81920MiB") == 80 * GIB
    assert predict.parse_bytes("24") == 24 * GIB
    with pytest.raises(ValueError):
        predict.parse_bytes("lots")


def test_cli_predict_table_and_csv(capsys):
    from llmbench import cli

    assert cli.main(["predict", "--grid", "seed", "--gpu-mem", "80GiB"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["model", "quant", "attn", "dtype", "b", "seq"]
    assert len(table) == 1 + 9
    assert all(line.split()[-2] == "yes" for line in table[1:])
    assert cli.main(["predict", "--grid", "extended", "--format", "csv", "--terms"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    assert {"prefill_peak_allocated_gib", "fits", "dominant_term", "kv_cache_gib"} <= set(header)
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    assert len(rows) == 81
    oom = [r for r in rows if r["attn"] == "eager" and r["batch"] == "4" and r["seq"] == "8192"]
    assert {r["fits"] for r in oom} == {"no"}
    assert cli.main(["predict", "--grid", "seed", "--gpu-mem", "8GiB"]) == 0
    fits = [line.split()[-2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert "no" in fits and "yes" in fits


def test_cli_predict_imports_no_torch():
    code = (
        "import sys; from llmbench import cli; cli.main(['predict', '--grid', 'extended']); "
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert process.returncode == 0, process.stderr
