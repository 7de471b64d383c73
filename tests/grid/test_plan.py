"""Grid choice on hosts without a GPU (model entries: test_model_entries.py)."""

import pytest

from llmbench.grid.files import InputError
from llmbench.grid.plan import choose_grid, host_has_cuda

BASE = {"grid": "seed", "device": "auto", "on_missing_gpu": "smoke"}


def test_no_gpu_falls_back_to_smoke_and_says_so():
    choice = choose_grid(BASE, has_cuda=False)
    assert choice.name == "smoke"
    assert "No CUDA GPU was found" in choice.message


def test_gpu_host_keeps_the_grid():
    assert choose_grid(BASE, has_cuda=True).name == "seed"
    assert choose_grid(BASE, has_cuda=True).message is None


def test_policies_fail_ignore_and_cpu_device():
    with pytest.raises(InputError, match="No CUDA GPU was found"):
        choose_grid({**BASE, "on_missing_gpu": "fail"}, has_cuda=False)
    assert choose_grid({**BASE, "on_missing_gpu": "ignore"}, has_cuda=False).name == "seed"
    assert choose_grid({**BASE, "device": "cpu"}, has_cuda=False).name == "seed"


def test_hidden_gpus_count_as_none(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert host_has_cuda() is False


def test_device_cuda_on_a_host_without_cuda_stops_unless_jobs_go_elsewhere():
    # the smoke fallback would force its cells onto CUDA too: every cell would fail
    for grid in ("seed", "smoke"):
        with pytest.raises(InputError, match="device: cuda, but no CUDA GPU was found"):
            choose_grid({**BASE, "grid": grid, "device": "cuda"}, has_cuda=False)
    ignored = {**BASE, "device": "cuda", "on_missing_gpu": "ignore"}
    assert choose_grid(ignored, has_cuda=False).name == "seed"
    assert choose_grid({**BASE, "device": "cuda"}, has_cuda=True).name == "seed"
