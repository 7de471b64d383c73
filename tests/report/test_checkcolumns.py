"""Truth checks as cells.csv columns (``llmbench.report.checkcolumns``)."""

from llmbench.report.checkcolumns import check_columns, setting_found


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
