"""Tables from cell JSONs: columns, units, per-device rows, bad files named."""

import json

import pytest

from llmbench import GIB
from llmbench.grid.schemas import SchemaError
from llmbench.report.aggregate import REQUIRED_COLUMNS, build_tables


def device(name, allocated, peak):
    return {
        "device": name,
        "allocated_bytes": allocated,
        "reserved_bytes": allocated + GIB,
        "peak_allocated_bytes": peak,
        "peak_reserved_bytes": peak + GIB,
        "nvml_device_used_bytes": peak + 2 * GIB,
        "nvml_process_used_bytes": None,
    }


def ok_result(batch=2):
    phase = lambda a, p: {  # noqa: E731
        "devices": [device("cuda:0", a * GIB, p * GIB), device("cuda:1", a * GIB, p * GIB)],
        "host": {"rss_bytes": GIB, "peak_rss_bytes": 2 * GIB},
    }
    stats = {
        "unit": "ms",
        "count": 3,
        "p50": 10.0,
        "p90": 12.0,
        "p99": 12.0,
        "min": 9.0,
        "max": 12.0,
        "mean": 10.0,
        "std": 1.0,
        "raw": [9.0, 10.0, 12.0],
    }
    return {
        "schema_version": 1,
        "cell": {
            "model": "m",
            "quant": "nf4",
            "attn": "sdpa",
            "dtype": "bfloat16",
            "batch": batch,
            "seq": 16,
            "attn_implementation": "sdpa",
            "sdpa_backend": None,
            "device": "cuda",
        },
        "settings": {"measurement": {}, "device": "auto", "device_map": "auto"},
        "status": "ok",
        "phase": None,
        "reason": None,
        "error": None,
        "environment": {
            "hostname": "h",
            "python": "3",
            "packages": {"torch": "2"},
            "git": {"commit": "abc"},
            "gpus": [
                {
                    "device": "cuda:0",
                    "name": "NVIDIA H100 80GB HBM3",
                    "uuid": "u0",
                    "total_memory_bytes": 80 * GIB,
                },
                {
                    "device": "cuda:1",
                    "name": "NVIDIA H100 80GB HBM3",
                    "uuid": "u1",
                    "total_memory_bytes": 80 * GIB,
                },
            ],
        },
        "gpu_before": {
            "GPU-u0": {"used_bytes": 0, "compute_processes": []},
            "GPU-u1": {"used_bytes": 0, "compute_processes": [{"pid": 7, "used_bytes": GIB}]},
        },
        "checks": {"gpu_clean": {}, "quantization": {"applied": "nf4", "passed": True}},
        "memory": {
            "unit": "bytes",
            "phases": {"load": phase(2, 2), "prefill": phase(2, 3), "decode": phase(2.5, 2.75)},
        },
        "latency": {
            "timer": "cuda_events",
            "prefill": stats,
            "decode_per_token": stats,
            "ttft_ms": 11.0,
            "decode_tokens_per_s": 200.0,
            "prefill_tokens_per_s": 3200.0,
        },
        "energy": None,
        "efficiency": {"mfu": 0.5, "mbu": 0.1},
        "timing_breakdown": {
            "wall_s": 10.0,
            "load_s": 3.0,
            "measure_s": 5.0,
            "start_method": "fork from warm-start server",
        },
        "model": {
            "checkpoint_kind": "prequantized",
            "placement": {
                "parameter_bytes_per_device": {"cuda:0": GIB, "cuda:1": GIB},
                "hf_device_map_modules": {
                    "cuda:0": ["model.layers.0-15"],
                    "cuda:1": ["model.layers.16-31"],
                },
            },
        },
    }


def write(tmp_path, name, document):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_cells_table_sums_devices_in_gib(tmp_path):
    cells, devices = build_tables([write(tmp_path, "a.json", ok_result())])
    row = cells.iloc[0]
    assert set(REQUIRED_COLUMNS) <= set(cells.columns)
    assert row["n_devices"] == 2
    assert row["load_allocated_gib"] == pytest.approx(4.0)
    assert row["prefill_peak_allocated_gib"] == pytest.approx(6.0)
    assert row["prefill_peak_reserved_gib"] == pytest.approx(8.0)
    assert row["decode_peak_allocated_gib"] == pytest.approx(5.5)
    assert row["device_total_gib"] == pytest.approx(160.0)
    assert row["load_reserved_gib"] == pytest.approx(6.0)  # both devices
    assert row["load_reserved_cuda0_gib"] == pytest.approx(3.0)  # what the notebook read
    assert row["overhead_fraction"] == pytest.approx(0.2)
    assert row["start_method"] == "fork from warm-start server"
    assert row["gpu_clean"] == False  # noqa: E712 - cuda:1 had another process before the cell
    assert row["prefill_ms_p50"] == 10.0 and row["tokens_per_s"] == 200.0


def test_devices_table_has_one_row_per_device_and_phase(tmp_path):
    _, devices = build_tables([write(tmp_path, "a.json", ok_result())])
    assert len(devices) == 2 * 3
    second = devices[(devices.device == "cuda:1") & (devices.phase == "prefill")].iloc[0]
    assert second["peak_allocated_gib"] == pytest.approx(3.0)
    assert second["modules"] == "model.layers.16-31"


def test_seed_cases_label_their_rows(tmp_path):
    case = {
        "case": "1 standard",
        "variant": "as written",
        "model": "m",
        "quant": "nf4",
        "attn": "sdpa",
        "dtype": "bfloat16",
        "batch": 2,
        "seq": 16,
        "notebook_reserved_gib": {"initial": 7.5, "inference": None},
    }
    paths = [write(tmp_path, "a.json", ok_result(2)), write(tmp_path, "b.json", ok_result(1))]
    cells, _ = build_tables(paths, [case])
    labelled = cells.set_index("batch")
    assert labelled.loc[2, "seed_case"] == "1 standard"
    assert labelled.loc[2, "notebook_initial_reserved_gib"] == 7.5
    assert (
        labelled.loc[1, "seed_case"] is None
        or labelled.loc[1, "seed_case"] != labelled.loc[1, "seed_case"]
    )


def test_a_bad_cell_file_fails_naming_it(tmp_path):
    broken = ok_result()
    del broken["status"]
    with pytest.raises(SchemaError, match="broken.json"):
        build_tables(
            [write(tmp_path, "good.json", ok_result()), write(tmp_path, "broken.json", broken)]
        )
