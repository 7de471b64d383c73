"""llmbench.host.nvml: NVML's own failures degrade to None, a programming error does not."""

import types

import pytest

from llmbench.host import nvml


def _fake(function):
    return types.SimpleNamespace(nvmlDeviceGetCount=function)


def test_an_nvml_error_reads_as_no_number(monkeypatch):
    def fails():
        raise nvml.NVMLError(1)

    monkeypatch.setattr(nvml, "pynvml", _fake(fails))
    monkeypatch.setattr(nvml, "available", lambda: True)
    assert nvml.device_count() == 0
    assert nvml.driver_version() is None  # a wrapper this fake library lacks


def test_a_programming_error_is_not_swallowed(monkeypatch):
    def broken():
        raise TypeError("wrong arguments")

    monkeypatch.setattr(nvml, "pynvml", _fake(broken))
    monkeypatch.setattr(nvml, "available", lambda: True)
    with pytest.raises(TypeError):
        nvml.device_count()
