"""The parent process: a JSON for every cell, whatever the child does."""

import json
import os
import time

import pytest
from conftest import (
    FAKE_CELL_SETTINGS,
    REPO,
    kill_runner_of_hanging_worker,
    process_gone,
    run_fake_cell,
)

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


def failed_base(tmp_path):
    """A base checkpoint folder whose build failed, as scripts/materialize_model.py leaves it."""
    base = tmp_path / "resources" / "models" / "tiny-mistral" / "base"
    base.mkdir(parents=True)
    manifest = {
        "kind": "random-weights",
        "status": "failed",
        "source": "config/models/tiny-mistral.json",
        "error_type": "builtins.KeyError",
        "error": "KeyError: 'no_such_activation'",
        "traceback": "Traceback (most recent call last): ...",
        "log": "logs/models/tiny-mistral/materialize.log",
    }
    (base / "checkpoint.json").write_text(json.dumps(manifest))
    return base


def test_cell_of_a_model_that_was_not_built_is_an_error_cell_and_starts_no_worker(tmp_path):
    base = failed_base(tmp_path)
    out = tmp_path / "cell.json"
    result = run_cell(
        cell=CELL,
        settings={"measurement": {}, "device": "cpu", "device_map": "auto"},
        model_entry={},
        base_dir=str(base),
        prequantized_dir=None,
        out_path=out,
        log_path=tmp_path / "cell.log",
        timeout_s=30,
        worker_module="no_such_worker_module",  # started, it would make the cell `crashed`
    )
    assert (result["status"], result["phase"]) == ("error", "load")
    for named in (
        "KeyError: 'no_such_activation'",
        "config/models/tiny-mistral.json",
        "logs/models/tiny-mistral/materialize.log",
        f"snakemake -R {base / 'checkpoint.json'}",
    ):
        assert named in result["reason"]
    assert result["error"]["category"] == "other_error"
    assert result["error"]["type"] == "builtins.KeyError"
    assert result["timing_breakdown"]["start_method"] == "not started (model not built)"
    assert json.loads(out.read_text()) == result
    validate_cell_result(result, where=str(out))
    assert "model checkpoint not built" in (tmp_path / "cell.log").read_text()


def test_failed_build_reads_what_a_failed_build_writes(tmp_path):
    from llmbench.measure.models import MANIFEST
    from llmbench.record.cell import write_json_atomic
    from llmbench.run.builds import CHECKPOINT_MANIFEST, failed_build, failed_build_manifest

    assert CHECKPOINT_MANIFEST == MANIFEST
    try:
        json.loads("{not json")
    except ValueError as exc:
        manifest = failed_build_manifest(
            exc, kind="random-weights", source="config/models/x.json", log_path="x.log"
        )
    write_json_atomic(tmp_path / MANIFEST, manifest)
    path, read = failed_build(tmp_path)
    assert path == tmp_path / MANIFEST
    assert read["error"].startswith("JSONDecodeError: ")
    assert read["source"] == "config/models/x.json"
    assert "Traceback" in read["traceback"]
    # A built checkpoint (no status), a missing manifest or no folder at all: not failed.
    write_json_atomic(tmp_path / MANIFEST, {"kind": "random-weights", "n_parameters": 1})
    assert failed_build(tmp_path) is None
    assert failed_build(tmp_path / "none") is None and failed_build(None) is None
    # A manifest that is not JSON cannot describe a checkpoint: failed, naming the file.
    (tmp_path / MANIFEST).write_text("{")
    assert str(tmp_path / MANIFEST) in failed_build(tmp_path)[1]["error"]


# --- Start-up has its own limit; the cell's limit covers load and measurement (issue 12, 8) ---


def test_a_slow_start_does_not_eat_the_cells_time_limit(tmp_path, fake_path):
    """Imports that take 3 s do not time out a cell whose limit is 2 s: that limit counts from
    the moment the worker leaves setup (on today's main this cell timed out in setup)."""
    result = run_fake_cell(
        tmp_path, "slow_start", timeout_s=2, fake_startup_s=3, startup_timeout_s=30
    )
    assert result["status"] == "unsupported"  # the fake's verdict: it ran to its end
    assert result["timing_breakdown"]["startup_limit_s"] == 30


def test_a_start_up_that_never_ends_times_out_and_says_so(tmp_path, fake_path):
    result = run_fake_cell(tmp_path, "hang_in_setup", timeout_s=60, startup_timeout_s=1)
    assert result["status"] == "timeout" and result["phase"] == "setup"
    assert result["timing_breakdown"]["limit_exceeded"] == "start-up"
    assert "start-up (process start and imports) exceeded its limit of 1 s" in result["reason"]


def test_a_schedulers_deadline_counts_start_up_too(tmp_path, fake_path):
    """Under Slurm the job ends at a fixed time: start-up cannot borrow from it."""
    result = run_fake_cell(
        tmp_path, "slow_start", timeout_s=2, fake_startup_s=30, startup_timeout_s=60, deadline_s=2
    )
    assert result["status"] == "timeout"
    assert result["timing_breakdown"]["limit_exceeded"] == "job"
    assert "the job's time ran out" in result["reason"]


def test_a_cell_waits_for_its_gpu_while_another_run_measures_on_it(
    tmp_path, fake_path, monkeypatch
):
    """Two runs on one host: the second cell starts only once the first lets go of the GPU,
    and its JSON says how long it waited (on today's main both measured at once)."""
    import subprocess
    import sys
    import textwrap

    from llmbench.run import gpulock

    lock_dir = tmp_path / "locks"
    monkeypatch.setenv(gpulock.LOCK_DIR_VARIABLE, str(lock_dir))
    monkeypatch.setattr(gpulock, "visible_gpus", lambda environ=None: ["GPU-x"])
    monkeypatch.setattr(gpulock, "POLL_S", 0.1)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                from llmbench.run import gpulock
                here = Path({str(lock_dir)!r})
                with gpulock.exclusive_gpus(["GPU-x"], {{"cell": "other"}}, directory=here):
                    print("held", flush=True)
                    time.sleep(2)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert holder.stdout.readline().strip() == "held"
    # a GPU cell (the fake worker never touches CUDA)
    monkeypatch.setitem(FAKE_CELL_SETTINGS, "device", "cuda")
    result = run_fake_cell(tmp_path, "finish")
    holder.wait()
    lock = result["timing_breakdown"]["gpu_lock"]
    assert lock["gpus"] == ["GPU-x"] and lock["wait_s"] >= 1.0
    assert "waiting for gpu-GPU-x.lock" in (tmp_path / "cell.log").read_text()
