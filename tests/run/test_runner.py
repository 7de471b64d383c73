"""The parent process: a JSON for every cell, whatever the child does."""

import time

import pytest
from conftest import kill_runner_of_hanging_worker, process_gone, run_fake_cell

from llmbench.grid.spec import Cell
from llmbench.record.cell import validate_cell_result
from llmbench.run.runner import finalize, run_cell

CELL = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 1, 8)


def test_hanging_child_becomes_a_timeout_cell_in_its_phase(tmp_path, fake_path):
    started = time.monotonic()
    result = run_fake_cell(tmp_path, "hang", timeout_s=3)
    assert time.monotonic() - started < 30
    assert (result["status"], result["phase"]) == ("timeout", "prefill")
    assert "fake worker: hang" in result["error"]["traceback"]


def test_child_ignoring_sigterm_is_killed(tmp_path, fake_path, monkeypatch):
    monkeypatch.setattr("llmbench.run.runner.KILL_GRACE_S", 1.0)
    result = run_fake_cell(tmp_path, "ignore_sigterm", timeout_s=2)
    assert result["status"] == "timeout"


@pytest.mark.parametrize(
    "behaviour, signal_name", [("sigkill", "SIGKILL"), ("segfault", "SIGSEGV")]
)
def test_child_killed_by_a_signal_is_crashed(tmp_path, fake_path, behaviour, signal_name):
    result = run_fake_cell(tmp_path, behaviour)
    assert (result["status"], result["phase"]) == ("crashed", "prefill")
    assert signal_name in result["reason"]


def test_child_exiting_without_result_is_crashed(tmp_path, fake_path):
    result = run_fake_cell(tmp_path, "exit3")
    assert result["status"] == "crashed"
    assert "exited with code 3" in result["reason"]


def test_child_that_never_started_still_leaves_a_cell(tmp_path):
    out = tmp_path / "cell.json"
    result = run_cell(
        cell=CELL,
        settings={"measurement": {}, "device": "cpu", "device_map": "auto"},
        model_entry={},
        base_dir=None,
        prequantized_dir=None,
        out_path=out,
        timeout_s=30,
        worker_module="no_such_worker_module",
    )
    assert result["status"] == "crashed" and result["phase"] == "setup"
    validate_cell_result(result, where=str(out))


def test_finished_partial_is_kept_as_is():
    partial = {"status": "oom", "phase": "prefill", "reason": "x"}
    spec = {"cell": {}, "settings": {}}
    kept = finalize(partial, spec=spec, returncode=0, timed_out=False, timeout_s=1, log_tail="")
    assert kept["status"] == "oom"


def test_worker_dies_when_its_parent_is_killed(tmp_path, fake_path):
    """A job killed from outside must not leave a worker behind on the GPU."""
    assert process_gone(kill_runner_of_hanging_worker(tmp_path))
