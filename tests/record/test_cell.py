"""Cell result files: atomic writes, JSON hygiene, schema validation that names the file."""

import json
import os
import stat

import pytest

from llmbench.grid.schemas import SchemaError
from llmbench.record.cell import (
    new_result,
    phase_record,
    read_cell_result,
    read_json,
    summed_device_bytes,
    validate_cell_result,
    write_json_atomic,
)


def minimal_result(status="unsupported"):
    """The skeleton every cell starts from, finished as a cell that could not run."""
    cell = {
        "model": "tiny-mistral",
        "quant": "none",
        "attn": "flash_attention_2",
        "dtype": "bfloat16",
        "batch": 1,
        "seq": 8,
    }
    settings = {"measurement": {}, "device": "auto", "device_map": "auto"}
    result = new_result(cell, settings)
    result["cell"]["device"] = "cpu"
    result.update(status=status, reason="flash-attn kernels run only on NVIDIA CUDA GPUs")
    return result


def test_atomic_write_leaves_no_temp_files_and_replaces_whole(tmp_path):
    path = tmp_path / "a" / "cell.json"
    write_json_atomic(path, {"x": 1})
    write_json_atomic(path, {"x": 2, "nan": float("nan")})
    assert read_json(path) == {"x": 2, "nan": None}
    assert os.listdir(path.parent) == ["cell.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "cell.json"
    write_json_atomic(path, {"x": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})  # not serialisable: fails mid-write
    assert read_json(path) == {"x": 1}
    assert os.listdir(tmp_path) == ["cell.json"]


def test_corrupt_json_error_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"status": "ok"')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_cell_result(path)


def test_schema_violation_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.json"
    document = minimal_result()
    document["status"] = "OOM"
    path.write_text(json.dumps(document))
    with pytest.raises(SchemaError, match=r"bad.json: status: 'OOM' is not one of"):
        read_cell_result(path)


def test_minimal_failed_cell_is_valid_and_ok_needs_measurements():
    validate_cell_result(minimal_result(), where="x")
    with pytest.raises(SchemaError):
        validate_cell_result({**minimal_result("ok"), "phase": None}, where="x")


def test_oom_cell_needs_its_error():
    document = {**minimal_result("oom"), "phase": "prefill"}
    with pytest.raises(SchemaError, match="error"):
        validate_cell_result(document, where="x")
    document["error"] = {
        "category": "out_of_memory",
        "type": "torch.OutOfMemoryError",
        "message": "CUDA out of memory",
        "requested_bytes": 1024,
    }
    validate_cell_result(document, where="x")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_cell_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    """On a cluster's shared filesystem others must read the cells: mkstemp's 0600 is not kept."""
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "cell.json", {"status": "ok"})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "cell.json").stat().st_mode) == mode


def test_phase_bytes_are_summed_over_every_device_or_not_at_all():
    key = "peak_allocated_bytes"
    devices = [{key: 3}, {key: 4}]
    result = {"memory": {"phases": {"prefill": {"devices": devices}}}}
    assert summed_device_bytes(phase_record(result, "prefill")["devices"], key) == 7
    # one device without the value: no sum (a partial one would pass for the whole)
    assert summed_device_bytes([*devices, {key: None}], key) is None
    assert summed_device_bytes([], key) is None
    assert phase_record(result, "decode") is None
    assert phase_record({"memory": None}, "prefill") is None
