"""Clean-GPU check from an NVML snapshot taken before the cell initialised CUDA."""

from llmbench.measure.checks import GPU_BUSY_THRESHOLD_BYTES, gpu_clean_check

GPUS = [{"device": "cuda:0", "uuid": "093fac55"}, {"device": "cuda:1", "uuid": "7e1d"}]


def snapshot(used0=503_316_480, processes1=()):
    return {
        "GPU-093fac55": {"used_bytes": used0, "compute_processes": []},
        "GPU-7e1d": {"used_bytes": 0, "compute_processes": list(processes1)},
    }


def test_idle_h100_baseline_is_clean():
    # 480 MiB in use with no process: what an idle H100 of the reference run showed.
    check = gpu_clean_check(snapshot(), GPUS)
    assert check["passed"]
    assert check["devices"][0]["used_bytes_before"] == 503_316_480


def test_another_process_or_memory_in_use_is_not_clean():
    busy = gpu_clean_check(snapshot(processes1=[{"pid": 9, "used_bytes": 2**30}]), GPUS)
    assert not busy["passed"] and busy["devices"][1]["clean"] is False
    full = gpu_clean_check(snapshot(used0=GPU_BUSY_THRESHOLD_BYTES + 1), GPUS)
    assert not full["passed"]


def test_unknown_devices_are_unknown_not_failed():
    check = gpu_clean_check({}, GPUS)
    assert check["passed"] is None and check["devices"][0]["known"] is False
    assert gpu_clean_check(None, [])["passed"] is None
