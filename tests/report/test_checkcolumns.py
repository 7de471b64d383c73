"""Truth checks as cells.csv columns (``llmbench.report.checkcolumns``)."""

from llmbench.report.checkcolumns import check_columns, nvml_outside_process_mib, setting_found


def test_a_setting_found_is_text_and_names_every_value_the_layers_held():
    assert setting_found({"requested": "float32", "found": ["float32"], "passed": True}) == (
        "float32"
    )
    assert setting_found({"requested": 4.0, "found": [4.0, 6.0], "passed": False}) == "4.0/6.0"
    assert setting_found({"requested": 4.0, "found": [], "passed": False}) is None
    assert setting_found(None) is None


def test_check_columns_of_a_4bit_cell_and_of_a_cell_without_checks():
    result = {
        "checks": {
            "quantization": {
                "applied": "fp4-dq",
                "passed": False,
                "compute_dtype": {"requested": "float32", "found": ["bfloat16"], "passed": False},
            }
        }
    }
    columns = check_columns(result)
    assert columns["quant_applied"] == "fp4-dq" and columns["quant_check_passed"] is False
    assert columns["bnb_4bit_compute_dtype_found"] == "bfloat16"
    assert columns["int8_threshold_found"] is None and columns["gpu_clean"] is None
    assert set(check_columns({}).values()) == {None}


def test_gpu_clean_is_unknown_where_the_snapshot_missed_a_device():
    def gpu_clean(before):
        # a record as the worker writes it, recomputed from its NVML snapshot
        result = {
            "checks": {"gpu_clean": {"passed": False}},  # what an old record may say
            "gpu_before": before,
            "environment": {"gpus": [{"device": "cuda:0", "uuid": "093fac55"}]},
        }
        return check_columns(result)["gpu_clean"]

    def seen(used, processes=()):
        return {"GPU-093fac55": {"used_bytes": used, "compute_processes": list(processes)}}

    assert gpu_clean(seen(503_316_480)) is True
    assert gpu_clean(seen(503_316_480, [{"pid": 9, "used_bytes": 2**30}])) is False
    assert gpu_clean({}) is None  # the snapshot missed the device: unknown, not failed
    assert check_columns({"checks": {}})["gpu_clean"] is None  # no check


def test_nvml_outside_the_process_is_the_largest_reading_over_phases_and_devices():
    def device(used, process):
        return {"nvml_device_used_bytes": used, "nvml_process_used_bytes": process}

    result = {
        "memory": {
            "phases": {
                "load": {"devices": [device(10 * 2**20, 4 * 2**20), device(None, 1)]},
                "prefill": {"devices": [device(20 * 2**20, 12 * 2**20)]},
            }
        }
    }
    assert nvml_outside_process_mib(result) == 8.0
    assert nvml_outside_process_mib({"memory": {"phases": {}}}) is None
    assert nvml_outside_process_mib({}) is None
