"""Grid choice on hosts without a GPU (model entries: test_model_entries.py)."""

import pytest

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
    with pytest.raises(RuntimeError, match="No CUDA GPU was found"):
        choose_grid({**BASE, "on_missing_gpu": "fail"}, has_cuda=False)
    assert choose_grid({**BASE, "on_missing_gpu": "ignore"}, has_cuda=False).name == "seed"
    assert choose_grid({**BASE, "device": "cpu"}, has_cuda=False).name == "seed"


def test_hidden_gpus_count_as_none(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert host_has_cuda() is False
