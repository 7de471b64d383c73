"""Tables from cell JSONs: columns, units, per-device rows, bad files named."""

import json
from pathlib import Path

import pandas as pd
import pytest

from llmbench import GIB
from llmbench.grid.schemas import SchemaError
from llmbench.predict import PREDICTED_COLUMNS
from llmbench.report.aggregate import REQUIRED_COLUMNS, build_tables, write_tables


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


def test_the_phase_a_cell_failed_in_gives_no_peak_column(tmp_path):
    # an oom in prefill holds what was allocated when it failed, not the prefill's peak: a
    # reader filtering prefill_peak_allocated_gib must not read it as what prefill needs
    result = ok_result()
    result.update(status="oom", phase="prefill", reason="CUDA out of memory")
    result["error"] = {"category": "out_of_memory", "type": "torch.OutOfMemoryError",
                       "message": "CUDA out of memory", "requested_bytes": GIB}  # fmt: skip
    del result["memory"]["phases"]["decode"]
    cells, devices = build_tables([write(tmp_path, "a.json", result)])
    row = cells.iloc[0]
    assert row["load_allocated_gib"] == pytest.approx(4.0)  # load finished
    assert pd.isna(row["prefill_peak_allocated_gib"]) and pd.isna(row["prefill_peak_reserved_gib"])
    assert row["failed_phase_peak_allocated_gib"] == pytest.approx(6.0)
    assert row["failed_phase_peak_reserved_gib"] == pytest.approx(8.0)
    assert list(devices.phase_finished) == [True, True, False, False]
    ok, _ = build_tables([write(tmp_path, "b.json", ok_result())])
    assert pd.isna(ok.iloc[0]["failed_phase_peak_allocated_gib"])


def test_the_predicted_columns_read_the_runs_model_registry(tmp_path):
    # a model defined only in the run's config (--configfile) is predicted from that entry,
    # not looked up in config/config.yaml (where "m" does not exist)
    path = write(tmp_path, "a.json", ok_result())
    plain, _ = build_tables([path])
    assert pd.isna(plain.iloc[0]["predicted_prefill_peak_allocated_gib"])
    registry = {"m": {"architecture": "config/models/tiny-mistral.json"}}
    run, _ = build_tables([path], models=registry)
    assert run.iloc[0]["predicted_prefill_peak_allocated_gib"] > 0


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


def test_every_bad_cell_file_is_named_at_once(tmp_path):
    broken = ok_result(batch=1)
    del broken["status"]
    paths = [
        write(tmp_path, "good.json", ok_result()),
        write(tmp_path, "broken.json", broken),
        str(tmp_path / "truncated.json"),
    ]
    (tmp_path / "truncated.json").write_text('{"schema_version": 1, "cell": ')
    with pytest.raises(SchemaError) as failure:
        build_tables(paths)
    message = str(failure.value)
    assert f"{paths[1]}: <top level>: 'status' is a required property" in message
    assert f"{paths[2]}: not valid JSON" in message
    assert "good.json" not in message


def test_a_failed_write_keeps_the_previous_tables(tmp_path, monkeypatch):
    import pandas as pd

    tables = {name: str(tmp_path / name) for name in ("cells.csv", "cells.parquet", "devices.csv")}
    first = build_tables([write(tmp_path, "a.json", ok_result())])
    write_tables(
        *first,
        cells_csv=tables["cells.csv"],
        cells_parquet=tables["cells.parquet"],
        devices_csv=tables["devices.csv"],
    )
    before = {name: Path(path).read_bytes() for name, path in tables.items()}
    second = build_tables(
        [write(tmp_path, "a.json", ok_result()), write(tmp_path, "b.json", ok_result(1))]
    )

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_tables(
            *second,
            cells_csv=tables["cells.csv"],
            cells_parquet=tables["cells.parquet"],
            devices_csv=tables["devices.csv"],
        )
    assert {name: Path(path).read_bytes() for name, path in tables.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_row_that_cannot_be_computed_keeps_its_cell_and_says_why(tmp_path, monkeypatch):
    from llmbench.report import aggregate

    real = aggregate.model_columns

    def fails_for_batch_one(result):
        if result["cell"]["batch"] == 1:
            raise KeyError("gpus")
        return real(result)

    monkeypatch.setattr(aggregate, "model_columns", fails_for_batch_one)
    paths = [write(tmp_path, "a.json", ok_result(2)), write(tmp_path, "b.json", ok_result(1))]
    cells, devices = build_tables(paths)
    rows = cells.set_index("batch")
    assert rows.loc[1, "status"] == "ok" and rows.loc[1, "table_error"] == "KeyError: 'gpus'"
    assert rows.loc[1, "path"] == paths[1]
    assert rows.loc[2, "prefill_peak_allocated_gib"] == pytest.approx(6.0)
    assert cells["table_error"].isna().sum() == 1
    assert set(devices["batch"]) == {2}


def test_a_model_the_predictor_cannot_handle_costs_only_its_own_rows(tmp_path, monkeypatch):
    """An OPT-style config has no intermediate_size: its row gets no prediction and says why,
    the others keep theirs."""
    opt = tmp_path / "opt-tiny.json"
    opt.write_text(json.dumps(OPT_STYLE))
    registry = {
        "tiny-mistral": {"architecture": "config/models/tiny-mistral.json"},
        "opt-tiny": {"architecture": str(opt)},
    }
    monkeypatch.setattr("llmbench.predict.columns._registry", lambda root: registry)
    mistral, opt_cell = ok_result(2), ok_result(1)
    mistral["cell"]["model"], opt_cell["cell"]["model"] = "tiny-mistral", "opt-tiny"
    paths = [write(tmp_path, "a.json", mistral), write(tmp_path, "b.json", opt_cell)]
    cells, _ = build_tables(paths)
    rows = cells.set_index("model")
    assert rows.loc["tiny-mistral", "predicted_prefill_peak_allocated_gib"] > 0
    assert rows.loc["opt-tiny", list(PREDICTED_COLUMNS)].isna().all()
    assert rows["predicted_error"].isna().sum() == 1
    reason = rows.loc["opt-tiny", "predicted_error"]
    assert "opt-tiny" in reason and str(opt) in reason and "model_type 'opt'" in reason


OPT_STYLE = {
    "model_type": "opt",
    "architectures": ["OPTForCausalLM"],
    "hidden_size": 64,
    "ffn_dim": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
    "word_embed_proj_dim": 64,
}
"""An OPT-style config.json: the MLP width is ffn_dim, there is no intermediate_size."""


def test_bnb_axes_and_what_the_layers_held_are_columns(tmp_path):
    old = ok_result()  # written before the axes existed: their defaults
    fp4 = ok_result(batch=4)
    fp4["cell"].update(quant="fp4", bnb_compute="float32", int8_threshold="default")
    fp4["checks"]["quantization"] = {
        "applied": "fp4",
        "passed": True,
        "compute_dtype": {"requested": "float32", "found": ["float32"], "passed": True},
    }
    int8 = ok_result(batch=8)
    int8["cell"].update(quant="int8", int8_threshold="4")
    int8["checks"]["quantization"] = {
        "applied": "int8",
        "passed": False,
        "int8_threshold": {"requested": 4.0, "found": [4.0, 6.0], "passed": False},
    }
    paths = [write(tmp_path, f"{n}.json", r) for n, r in (("a", old), ("b", fp4), ("c", int8))]
    cells, devices = build_tables(paths)
    rows = cells.set_index("batch")
    assert rows.loc[2, "bnb_compute"] == "config" and rows.loc[2, "int8_threshold"] == "default"
    assert rows.loc[4, "bnb_compute"] == "float32"
    assert rows.loc[4, "bnb_4bit_compute_dtype_found"] == "float32"
    assert rows.loc[8, "int8_threshold"] == "4"
    assert rows.loc[8, "int8_threshold_found"] == "4.0/6.0"
    assert pd.isna(rows.loc[4, "int8_threshold_found"])
    assert rows.loc[4, "quant_applied"] == "fp4"
    tables = {k: str(tmp_path / k) for k in ("cells_csv", "cells_parquet", "devices_csv")}
    write_tables(cells, devices, **tables)  # text columns keep parquet writable
    written = pd.read_parquet(tables["cells_parquet"]).set_index("batch")
    assert written["int8_threshold_found"].fillna("").to_dict() == {2: "", 4: "", 8: "4.0/6.0"}


def _varied_cells(tmp_path, count):
    """``count`` cell files of registry models with distinct shapes (distinct predictions)."""
    paths = []
    for i in range(count):
        result = ok_result(batch=1 + i % 3)
        result["cell"].update(model=("tiny-mistral", "tiny-llama")[i % 2], seq=16 * (1 + i))
        paths.append(write(tmp_path, f"c{i}.json", result))
    return paths


def test_worker_processes_build_the_same_tables(tmp_path, monkeypatch):
    from llmbench.report import aggregate

    paths = _varied_cells(tmp_path, 7)
    serial = build_tables(paths, workers=1)
    monkeypatch.setattr(aggregate, "PARALLEL_MIN_CELLS", 2)
    parallel = build_tables(paths, workers=2)
    predicted = serial[0]["predicted_prefill_peak_allocated_gib"]
    assert predicted.notna().all() and predicted.nunique() > 3  # predictions that differ
    pd.testing.assert_frame_equal(parallel[0], serial[0])
    pd.testing.assert_frame_equal(parallel[1], serial[1])


def test_worker_processes_name_every_bad_cell_file(tmp_path, monkeypatch):
    from llmbench.report import aggregate

    paths = _varied_cells(tmp_path, 4)
    (tmp_path / "truncated.json").write_text('{"schema_version": 1, "cell": ')
    monkeypatch.setattr(aggregate, "PARALLEL_MIN_CELLS", 2)
    with pytest.raises(SchemaError) as failure:
        build_tables([*paths, str(tmp_path / "truncated.json")], workers=2)
    assert f"{tmp_path / 'truncated.json'}: not valid JSON" in str(failure.value)
    assert "c0.json" not in str(failure.value)
