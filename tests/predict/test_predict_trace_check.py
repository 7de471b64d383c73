"""llmbench.predict.trace.check: traced vs measured for the ok one-GPU cells of a folder."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from predict_fixtures import REPO  # noqa: E402

from llmbench.predict.trace.check import PHASES, compare, main, report  # noqa: E402

SEED = REPO / "results" / "reference" / "h100" / "seed" / "cells" / "mistral-7b-v0.3"


def test_ok_one_gpu_cells_are_compared_and_the_rest_skipped(tmp_path, capsys):
    ok = SEED / "nf4" / "sdpa" / "bfloat16" / "b2_s3072.json"
    shutil.copy(ok, tmp_path / "ok.json")
    failed = json.loads(ok.read_text())
    failed["status"] = "oom"
    (tmp_path / "oom.json").write_text(json.dumps(failed))
    two_gpus = json.loads(ok.read_text())
    for phase in PHASES:
        devices = two_gpus["memory"]["phases"][phase]["devices"]
        devices.append(dict(devices[0], device="cuda:1"))
    (tmp_path / "two.json").write_text(json.dumps(two_gpus))
    (tmp_path / "notes.json").write_text("[1, 2]")
    (tmp_path / "corrupt.json").write_text("{truncated")
    unreadable: list[str] = []
    rows = compare([tmp_path], unreadable)
    assert len(unreadable) == 1 and "corrupt.json: JSONDecodeError" in unreadable[0]
    assert [r.path.endswith("ok.json") for r in rows] == [True]
    assert rows[0].worst() < 5e-4
    assert rows[0].error("load") == 0
    text = report(rows)
    assert text.startswith("nf4: 1/1 ok cells traced, worst 0.0") and "ok.json" in text
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nf4: 1/1" in out and "unreadable, skipped: " in out and "corrupt.json" in out


def test_an_untraceable_cell_is_listed_with_its_reason(tmp_path):
    result = json.loads((SEED / "none" / "sdpa" / "float32" / "b2_s3072.json").read_text())
    result["cell"]["attn"] = result["cell"]["attn_implementation"] = "flash_attention_2"
    (tmp_path / "fa2-fp32.json").write_text(json.dumps(result))
    (row,) = compare([tmp_path])
    assert row.traced is None and row.worst() == 0.0
    assert "flash_attention_2 in float32" in report([row])
