"""When a cell finished: ``finished_at`` in the cell JSON (UTC, ISO 8601), and in cells.csv."""

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from llmbench.grid.schemas import SchemaError
from llmbench.record.cell import (
    new_result,
    stamp_finished,
    validate_cell_result,
    write_json_atomic,
)
from llmbench.report.aggregate import build_tables


def finished_cell(seq=8):
    cell = {"model": "tiny-mistral", "quant": "none", "attn": "flash_attention_2"}
    cell.update(dtype="bfloat16", batch=1, seq=seq)
    result = new_result(cell, {"measurement": {}, "device": "auto", "device_map": "auto"})
    result["cell"]["device"] = "cpu"
    result.update(status="unsupported", reason="flash-attn runs only on NVIDIA CUDA GPUs")
    return result


def test_stamp_finished_writes_utc_iso_8601_to_the_second():
    result = finished_cell()
    moment = datetime(2026, 11, 29, 15, 4, 5, 999, tzinfo=timezone(timedelta(hours=1)))
    stamp_finished(result, now=moment)
    assert result["finished_at"] == "2026-11-29T14:04:05Z"
    validate_cell_result(result, where="cell.json")


def test_stamp_finished_uses_the_clock_now():
    result = finished_cell()
    before = datetime.now(UTC).replace(microsecond=0)
    stamp_finished(result)
    stamped = datetime.fromisoformat(result["finished_at"])
    assert before <= stamped <= datetime.now(UTC)


def test_schema_keeps_finished_at_optional_and_in_utc():
    validate_cell_result(finished_cell(), where="old.json")  # cells recorded before it
    result = finished_cell()
    result["finished_at"] = "29 Nov 2026"
    with pytest.raises(SchemaError, match="finished_at"):
        validate_cell_result(result, where="bad.json")


def test_cells_table_has_finished_at_empty_for_older_cells(tmp_path):
    stamped, old = finished_cell(seq=8), finished_cell(seq=16)
    stamp_finished(stamped, now=datetime(2026, 11, 29, 14, 4, 5, tzinfo=UTC))
    write_json_atomic(tmp_path / "a.json", stamped)
    write_json_atomic(tmp_path / "b.json", old)
    cells, _ = build_tables([tmp_path / "a.json", tmp_path / "b.json"])
    by_seq = dict(zip(cells["seq"], cells["finished_at"], strict=True))
    assert by_seq[8] == "2026-11-29T14:04:05Z" and pd.isna(by_seq[16])
