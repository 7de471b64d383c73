"""llmbench.predict.output: the `llmbench predict` report (header with units and device, table,
per-term breakdown, cells that cannot run, closing count) and
CSV (without torch)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from predict_fixtures import REPO

from llmbench import predict
from llmbench.grid.spec import Cell
from llmbench.grid.support import static_unsupported
from llmbench.predict import output

FA2_FP32 = Cell("mistral-7b-v0.3", "nf4", "flash_attention_2", "float32", 2, 3072)
"""The seed grid's cell that ran out of nothing: flash-attn refused float32 on the H100."""


def report(capsys, *args: str) -> list[str]:
    from llmbench import cli

    assert cli.main(["predict", *args]) == 0
    return capsys.readouterr().out.splitlines()


def table_rows(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The table's column header and its rows (the lines up to the next blank one)."""
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["model", "quant"])
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start].split(), [line.split() for line in lines[start + 1 : end]]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cli_predict_table_and_csv(capsys):
    lines = report(capsys, "--grid", "seed", "--gpu-mem", "80GiB")
    header, rows = table_rows(lines)
    assert header[:6] == ["model", "quant", "attn", "dtype", "b", "seq"]
    assert len(rows) == 9
    # Every cell fits 80 GiB; the one that cannot run at all says so instead of "yes".
    assert header[-4:] == ["fits", "checked", "dominant", "method"]
    fits = {tuple(row[:6]): row[-4] for row in rows}
    assert fits.pop(("mistral-7b-v0.3", "nf4", "flash_attention_2", "float32", "2", "3072")) == (
        "unsupported"
    )
    assert set(fits.values()) == {"yes"}
    from llmbench import cli

    assert cli.main(["predict", "--grid", "extended", "--format", "csv", "--terms"]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0].split(",")
    assert {"prefill_peak_allocated_gib", "fits", "dominant_term", "kv_cache_gib"} <= set(header)
    rows = csv_rows(text)
    assert len(rows) == 81
    # every row names the device and the total it was fitted into, those that cannot run too
    assert {(r["gpu"], float(r["gpu_mem_gib"])) for r in rows} == {("h100-80gb", 81079 / 1024)}
    oom = [r for r in rows if r["attn"] == "eager" and r["batch"] == "4" and r["seq"] == "8192"]
    assert {r["fits"] for r in oom} == {"no"}
    _, rows = table_rows(report(capsys, "--grid", "seed", "--gpu-mem", "9GiB"))
    fits = [row[-4] for row in rows]
    assert "no" in fits and "yes" in fits


def test_header_gives_the_units_and_the_device_as_read(capsys):
    lines = report(capsys, "--grid", "seed", "--gpu-mem", "24GB")
    head = "\n".join(lines[:3])
    assert "grid seed, 9 cells" in head
    assert "memory in GiB (2^30 bytes)" in head
    # 24e9 bytes / 2^30 = 22.35 GiB as nvidia-smi would say; less 615 MiB assumed = 21.75 GiB
    assert (
        "device 24GB: nvidia-smi 22888 MiB, PyTorch 21.75 GiB (the driver keeps 615 MiB, assumed)"
    ) in head
    # default: an H100 80GB, PyTorch's 79.18 GiB (81079 MiB), not 80 GiB
    default = report(capsys, "--grid", "seed")[1]
    assert default == (
        "device h100-80gb: nvidia-smi 81559 MiB, PyTorch 79.18 GiB (the driver keeps 480 MiB, "
        "measured)"
    )
    assert report(capsys, "--grid", "seed", "--gpu", "h100-80gb")[1] == default
    # nvidia-smi's total of a GPU measured here is that GPU
    assert report(capsys, "--grid", "seed", "--gpu-mem", "81559MiB")[1] == default


def test_report_closes_with_how_many_cells_fit(capsys):
    lines = report(capsys, "--grid", "seed", "--gpu-mem", "24GB")
    _, rows = table_rows(lines)
    verdicts = [row[-4] for row in rows]
    counts = {v: verdicts.count(v) for v in ("yes", "maybe", "no", "unsupported")}
    assert counts == {"yes": 5, "maybe": 1, "no": 2, "unsupported": 1}
    # every cell with a verdict is a setting the references measured (llmbench.predict.checked)
    assert lines[-1] == (
        "9 cells: 5 fit, 1 maybe, 2 do not fit, 1 cannot run; checked on a GPU: 8 yes"
    )
    lines = report(capsys, "--grid", "extended")
    verdicts = [row[-4] for row in table_rows(lines)[1]]
    assert (verdicts.count("yes"), verdicts.count("maybe"), verdicts.count("no")) == (75, 3, 3)
    # no zero counts but "fit"; eager 4 x 8192 ran out of memory: nothing measured around it
    assert lines[-1] == (
        "81 cells: 75 fit, 3 maybe, 3 do not fit; checked on a GPU: 80 yes, 1 shape"
    )


def test_help_explains_need_and_maybe(capsys):
    from llmbench import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["predict", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "need an upper envelope of what the device holds at the largest peak: " in (text)
    assert "+ the CUDA context" in text
    assert "yes: need <= the device's PyTorch total (the header's)" in text
    assert "maybe: the allocations fit (peak allocated + CUDA context <= that total), the " in text
    assert "A device is --gpu NAME (a GPU measured here; the default is the config's" in text
    assert "or --gpu-mem SIZE, its total as nvidia-smi reports it" in text
    assert "fragmentation envelope does not" in text
    assert "unsupported: cannot run whatever the memory" in text


def test_cells_that_cannot_run_are_flagged_with_the_reason(capsys):
    lines = report(capsys, "--grid", "seed")
    flagged = [
        line for line in lines if "nf4 flash_attention_2 float32 b2 s3072: unsupported" in line
    ]
    assert len(flagged) == 1 and "float16 or bfloat16" in " ".join(lines)
    from llmbench import cli

    assert cli.main(["predict", "--grid", "seed", "--format", "csv"]) == 0
    rows = {Cell.from_mapping(r): r for r in csv_rows(capsys.readouterr().out)}
    assert rows[FA2_FP32]["fits"] == "unsupported"
    assert "float16 or bfloat16" in rows[FA2_FP32]["reason"]
    assert all(r["reason"] == "" for c, r in rows.items() if c != FA2_FP32)
    # The reference measured it so: flash-attn refused float32.
    measured = REPO / "results/reference/h100/seed/cells" / FA2_FP32.relpath
    assert json.loads(measured.read_text())["status"] == "unsupported"
    # A predictor-side flag only: the pipeline still attempts the cell.
    assert static_unsupported(FA2_FP32, "cuda") is None


def test_terms_are_one_a_line_within_100_columns(capsys, monkeypatch, tmp_path):
    # the hand replay's terms: no cached traces (a filled local cache would answer instead)
    monkeypatch.setattr("llmbench.predict.method.TRACE_CACHE", tmp_path / "no-traces")
    lines = report(capsys, "--grid", "extended", "--terms")
    assert max(len(line) for line in lines) <= 100
    rows = predict.grid_prediction_rows("seed", repo_root=REPO, terms=True)
    lines = report(capsys, "--grid", "seed", "--terms")
    start = lines.index("mistral-7b-v0.3 nf4 eager bfloat16 b2 s3072: fits yes")
    block = lines[start : lines.index("", start)]
    row = next(r for r in rows if r["quant"] == "nf4" and r["attn"] == "eager")
    terms = {line.split()[0]: line.split()[1] for line in block if line.startswith("    ")}
    assert terms["attention_scores"] == f"{row['attention_scores_gib']:.2f}" == "5.62"
    assert set(terms) == {n for n in predict.TERM_NAMES if row[f"{n}_gib"]}
    assert f"need {row['device_need_gib']:.2f} = peak 10.88 + allocator slack" in block[2]


def test_cli_predict_imports_no_torch():
    code = (
        "import sys; from llmbench import cli; cli.main(['predict', '--grid', 'extended']); "
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert process.returncode == 0, process.stderr


def test_report_names_cells_without_a_prediction_and_counts_them():
    rows = predict.grid_prediction_rows("seed", repo_root=REPO, gpu_mem="24GB")
    unknown = {**Cell("llama-x", "none", "sdpa", "bfloat16", 1, 8).to_dict(), "fits": "unknown"}
    unknown.update(reason="rope_scaling type 'yarn' is not modelled", note="no prediction")
    text = predict.format_report([*rows, unknown], grid="seed", gpu_mem="24GB")
    lines = text.splitlines()
    assert lines[-1] == (
        "10 cells: 5 fit, 1 maybe, 2 do not fit, 1 cannot run, 1 unknown; checked on a GPU: 8 yes"
    )
    reason = "  llama-x none sdpa bfloat16 b1 s8: unknown: rope_scaling type 'yarn' is not modelled"
    assert reason in lines
    terms = predict.format_report([*rows, unknown], grid="seed", gpu_mem="24GB", terms=True)
    assert "llama-x none sdpa bfloat16 b1 s8: unknown: rope_scaling" in terms  # named once


def test_the_table_shows_the_optional_axes_where_a_cell_is_off_their_defaults():
    plain = predict.grid_prediction_rows("seed", repo_root=REPO)
    assert "variant" not in predict.format_table(plain).splitlines()[0].split()
    rows = predict.grid_prediction_rows("quant", repo_root=REPO)
    header, body = table_rows(predict.format_table(rows).splitlines())
    assert header[6] == "variant"
    variants = {line[6] for line in body if line[1] in ("nf4", "fp4", "nf4-dq")}
    assert variants == {"_c-bf16", "_c-fp32"}
    fp32 = next(r for r in rows if r["quant"] == "fp4" and r["bnb_compute"] == "float32")
    assert output.cell_label(fp32).endswith("_c-fp32")


def test_grid_rows_read_the_runs_config_not_the_file_on_disk(tmp_path):
    # Snakemake's predict rule passes its config (--configfile, --config applied)
    import yaml

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    deeper = json.loads((REPO / "config/models/tiny-mistral.json").read_text())
    deeper["num_hidden_layers"] *= 8
    (tmp_path / "deeper.json").write_text(json.dumps(deeper))
    run = {**config, "models": {**config["models"], "tiny-mistral": {
        "architecture": str(tmp_path / "deeper.json")}}}  # fmt: skip

    def loads(run_config):
        rows = output.grid_prediction_rows("smoke", repo_root=REPO, run_config=run_config)
        return {
            r["load_allocated_gib"]
            for r in rows
            if r["model"] == "tiny-mistral" and r["quant"] == "none"
        }

    assert min(loads(run)) > max(loads(None))
