"""One cell at a time per GPU, across Snakemake runs (llmbench.run.gpulock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO

from llmbench.host import nvml
from llmbench.run import gpulock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {src!r})
    from llmbench.run import gpulock
    with gpulock.exclusive_gpus(["GPU-a"], {{"cell": "other run"}}, directory=Path({lock_dir!r})):
        print("held", flush=True)
        time.sleep(float(sys.argv[1]))
    """
)


def hold(lock_dir: Path, seconds: float) -> subprocess.Popen:
    """Another process (another Snakemake run's cell) holding GPU-a's lock."""
    code = HOLD.format(src=str(REPO / "src"), lock_dir=str(lock_dir))
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_cell_waits_for_the_gpu_and_says_for_whom(tmp_path, monkeypatch):
    monkeypatch.setattr(gpulock, "POLL_S", 0.1)
    holder = hold(tmp_path, 1.5)
    said = []
    with gpulock.exclusive_gpus(["GPU-a"], {"cell": "mine"}, said.append, tmp_path) as lock:
        pass
    holder.wait()
    # we got in only after the other cell let go (it held the GPU 1.5 s after saying so)
    assert lock["gpus"] == ["GPU-a"] and lock["wait_s"] >= 1.0
    assert len(said) == 1 and "other run" in said[0]
    # released, and the file no longer names us
    assert (tmp_path / "gpu-GPU-a.lock").read_text() == ""


def test_a_killed_holder_never_leaves_the_gpu_locked(tmp_path):
    holder = hold(tmp_path, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    with gpulock.exclusive_gpus(["GPU-a"], {"cell": "mine"}, directory=tmp_path) as lock:
        assert json.loads((tmp_path / "gpu-GPU-a.lock").read_text())["pid"] == os.getpid()
    assert time.monotonic() - started < 5 and lock["wait_s"] < 5


def test_cells_on_different_gpus_do_not_wait(tmp_path):
    holder = hold(tmp_path, 30)
    try:
        with gpulock.exclusive_gpus(["GPU-b"], {"cell": "mine"}, directory=tmp_path) as lock:
            assert lock["wait_s"] < 1
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "visible, expected",
    [
        (None, ["GPU-aaaa", "GPU-bbbb"]),
        ("1", ["GPU-bbbb"]),
        ("bbbb", ["GPU-bbbb"]),
        ("GPU-aaaa,1", ["GPU-aaaa", "GPU-bbbb"]),
        ("", []),
        ("-1", []),
        ("7", ["index-7"]),
    ],
)
def test_the_gpus_a_cell_can_use_follow_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setattr(nvml, "available", lambda: True)
    monkeypatch.setattr(nvml, "uuids", lambda: ["GPU-aaaa", "GPU-bbbb"])
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert gpulock.visible_gpus(environ) == expected


def test_no_driver_no_lock(monkeypatch):
    monkeypatch.setattr(nvml, "available", lambda: False)
    assert gpulock.visible_gpus({}) == []
