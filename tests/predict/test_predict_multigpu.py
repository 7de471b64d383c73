"""llmbench.predict.multigpu and devicesoutput, and ``llmbench predict --gpus``: per-device
fits and the number of GPUs a cell needs (tiny models and the 70B config on meta)."""

from __future__ import annotations

import csv
import io

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import yaml  # noqa: E402
from predict_fixtures import REPO  # noqa: E402

from llmbench import cli  # noqa: E402
from llmbench.grid.spec import Cell  # noqa: E402
from llmbench.predict.constants import GIB  # noqa: E402
from llmbench.predict.devicesoutput import device_rows, format_devices  # noqa: E402
from llmbench.predict.method import Unpredictable  # noqa: E402
from llmbench.predict.multigpu import gpus_needed, predict_devices, resolve_policy  # noqa: E402

MODELS = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]


def test_70b_bfloat16_needs_two_141_gib_gpus_not_one():
    c = Cell("llama-3.1-70b", "none", "sdpa", "bfloat16", 1, 1024)
    one = predict_devices(c, MODELS, REPO, gpus=1, gpu_mem=141 * GIB, decode_tokens=2)
    assert one.fits == "no" and one.offloaded
    needed = gpus_needed(c, MODELS, REPO, gpu_mem=141 * GIB, decode_tokens=2)
    assert needed.gpus == 2 and needed.fits == "yes" and needed.policy == "auto"
    assert [d.device for d in needed.devices] == ["cuda:0", "cuda:1"]
    assert "model.layers.0-39" in needed.devices[0].modules
    assert "lm_head" in needed.devices[1].modules


def test_a_device_that_does_not_fit_says_no_and_more_gpus_are_tried():
    c = Cell("tiny-llama", "none", "eager", "bfloat16", 8, 2048)
    small = predict_devices(c, MODELS, REPO, gpus=1, gpu_mem=GIB, decode_tokens=2)
    assert small.fits == "no"  # the eager prefill's b x h x s x s scores alone exceed 1 GiB
    assert gpus_needed(c, MODELS, REPO, gpu_mem=GIB, max_gpus=2, decode_tokens=2) is None


def test_the_policy_is_the_cells_and_auto_at_config():
    plain = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8)
    assert resolve_policy(plain, None) == "auto"
    assert (
        resolve_policy(
            Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8, device_map="sequential"), None
        )
        == "sequential"
    )
    assert resolve_policy(plain, "balanced_low_0") == "balanced_low_0"


def test_an_unpredictable_cell_gives_one_unknown_row_with_the_reason():
    c = Cell("tiny-llama", "nf4", "sdpa", "bfloat16", 1, 8)
    answer = predict_devices(c, MODELS, REPO, gpus=2, gpu_mem=80 * GIB)
    assert isinstance(answer, Unpredictable)
    (row,) = device_rows(c, answer, answer, "auto")
    assert row["fits"] == "unknown" and "nf4" in row["reason"] and "gpus_needed" not in row


def test_predict_gpus_prints_every_device_and_the_gpus_needed(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "blocks:\n  - {models: [tiny-llama], quant: [none], attn: [sdpa], dtype: [bfloat16],"
        " batch: [1], seq: [16], device_map: [config, single], max_memory: [none, 8GiB]}\n"
    )
    argv = ["predict", "--grid", str(grid), "--gpus", "2", "--gpu-mem", "80GiB"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "GPUs needed" in out and "cuda:0" in out
    assert "device_map single plans none" in out  # single with a max_memory: unsupported
    # the closing count, per cell (its worst device), as the one-device report's
    assert out.rstrip().endswith("4 cells: 3 fit, 1 cannot run; GPUs needed: 1 for 3 cells")
    assert cli.main([*argv, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "model,quant,attn,dtype,batch,seq,decode_mode,kv_cache,device_map,max_memory,policy"
    )
    assert len(lines) == 1 + 2 + 2 + 1 + 1  # auto balances even a tiny model over both GPUs
    # every row names the device and PyTorch's total of it (80 GiB less 615 MiB assumed)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert {(r["gpu"], round(float(r["gpu_mem_gib"]), 2)) for r in rows} == {("80GiB", 79.4)}
    assert cli.main(["predict", "--grid", str(grid), "--gpus", "0"]) == 2


def test_the_table_has_a_header_with_the_units():
    c = Cell("tiny-llama", "none", "sdpa", "bfloat16", 1, 8)
    answer = predict_devices(c, MODELS, REPO, gpus=1, gpu_mem=80 * GIB, decode_tokens=2)
    text = format_devices(device_rows(c, answer, answer, "auto"), grid="g", gpus=1, gpu_mem="80GiB")
    assert text.startswith("grid g: predicted peak allocated per device (GiB = 2^30 bytes)")
    # the device as read: nvidia-smi's total, and PyTorch's, which the cells are fitted into
    assert "on 1 x 80GiB: nvidia-smi 81920 MiB, PyTorch 79.40 GiB (the driver keeps 615 MiB" in text
    assert "GPUs needed: the fewest GPUs of 80GiB on which every device fits" in text
    assert "yes" in text


def test_single_never_needs_more_than_one_gpu():
    c = Cell("tiny-llama", "none", "eager", "bfloat16", 8, 2048, device_map="single")
    assert gpus_needed(c, MODELS, REPO, gpu_mem=GIB, max_gpus=4, decode_tokens=2) is None
    fits = gpus_needed(c, MODELS, REPO, gpu_mem=80 * GIB, max_gpus=4, decode_tokens=2)
    assert fits.gpus == 1 and fits.policy == "single"


def test_several_gpus_say_unknown_or_unsupported_instead_of_an_eager_bf16_cache_number(tmp_path):
    # The per-device trace is an eager decode with a model-dtype cache: an HQQ int4 cache or
    # a static decode gets `unknown` (not the bf16 cache's number); FA2 graph decode, which
    # the H200 refused, `unsupported` as in the one-device report.
    from llmbench.predict.devicesoutput import grid_device_rows

    grid = tmp_path / "g.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "description": "unmodelled per device",
                "blocks": [
                    {"label": "kv", "models": ["mistral-7b-v0.3"], "quant": ["none"],
                     "attn": ["sdpa"], "dtype": ["bfloat16"], "batch": [8], "seq": [32768],
                     "kv_cache": ["hqq-int4"]},
                    {"label": "modes", "models": ["mistral-7b-v0.3"], "quant": ["none"],
                     "attn": ["flash_attention_2"], "dtype": ["bfloat16"], "batch": [1],
                     "seq": [512], "decode_mode": ["static", "graph"]},
                ],
            }
        )
    )  # fmt: skip
    rows = grid_device_rows(str(grid), repo_root=REPO, gpus=1, gpu_mem="h200")
    verdicts = {(r["kv_cache"], r["decode_mode"]): (r["fits"], r["reason"]) for r in rows}
    assert verdicts[("hqq-int4", "eager")][0] == "unknown"
    assert "kv_cache hqq-int4 is not traced per device" in verdicts[("hqq-int4", "eager")][1]
    assert verdicts[("model", "static")][0] == "unknown"
    assert verdicts[("model", "graph")][0] == "unsupported"


def test_the_closing_count_takes_each_cells_worst_device_and_counts_gpus_needed():
    from llmbench.predict.devicesoutput import format_devices_summary

    cell = {"model": "m", "quant": "none", "attn": "sdpa", "dtype": "bfloat16", "batch": 1}
    rows = [
        {**cell, "seq": 8, "device": "cuda:0", "fits": "yes", "gpus_needed": 2},
        {**cell, "seq": 8, "device": "cuda:1", "fits": "no", "gpus_needed": 2},
        {**cell, "seq": 16, "device": "cuda:0", "fits": "maybe", "gpus_needed": 1},
        {**cell, "seq": 16, "device": "cuda:1", "fits": "yes", "gpus_needed": 1},
        {**cell, "seq": 32, "fits": "no", "gpus_needed": "none"},
        {**cell, "seq": 64, "fits": "unknown"},
    ]
    assert format_devices_summary(rows) == (
        "4 cells: 0 fit, 1 maybe, 2 do not fit, 1 unknown; "
        "GPUs needed: 1 for 1 cell, 2 for 1 cell, none for 1 cell"
    )


def test_a_grid_of_cells_that_all_say_unknown_is_counted_not_called_deviceless():
    from llmbench.predict.devicesoutput import format_devices_summary

    rows = [{"model": "m", "seq": s, "fits": "unknown", "gpu": "h200"} for s in (8, 16)]
    assert format_devices_summary(rows) == "2 cells: 0 fit, 2 unknown"
