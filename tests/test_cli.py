"""Command-line helpers that move runs between results/ and a reference folder; user errors
as one line; a closed stdout (``| head``) without a traceback."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO

from llmbench import cli

EXTENDED = REPO / "results" / "reference" / "h100" / "extended"
SEED = REPO / "results" / "reference" / "h100" / "seed"
FRONTIER = REPO / "results" / "reference" / "h100" / "frontier"
CELL = "mistral-7b-v0.3/none/sdpa/bfloat16/b2_s3072.json"


def test_resume_copies_missing_cells_only_and_dates_them_now(tmp_path):
    target = tmp_path / "results"
    mine = target / "cells" / CELL
    mine.parent.mkdir(parents=True)
    mine.write_text('{"mine": true}')
    started = time.time()
    cells, files = cli.resume(EXTENDED, target, "extended")
    assert (cells, files) == (80, 0)  # 81 committed, one already here
    assert json.loads(mine.read_text()) == {"mine": True}  # never overwritten
    copied = sorted((target / "cells").rglob("*.json"))
    assert len(copied) == 81
    assert all(p.stat().st_mtime >= started - 1 for p in copied if p != mine)
    assert (target / "benchmarks" / "cells" / CELL.replace(".json", ".tsv")).exists() is False
    assert cli.resume(EXTENDED, target, "extended") == (0, 0)  # a second call adds nothing
    # a grid none of whose cells the reference has: a wrong --grid, not "0 copied"
    with pytest.raises(cli.UsageError, match="none of grid smoke's 23 cells.*nothing to resume"):
        cli.resume(SEED, tmp_path / "other", "smoke")


def test_resume_brings_frontier_probes_and_searches(tmp_path):
    _, files = cli.resume(FRONTIER, tmp_path, "seed", frontier=True)
    probes = list((tmp_path / "frontier" / "probes").rglob("*.json"))
    searches = list((tmp_path / "frontier" / "searches").rglob("*.json"))
    assert files == len(probes) + len(searches) == 48 + 24


def test_publish_overwrites(tmp_path):
    cli.resume(EXTENDED, tmp_path, "extended")
    (tmp_path / "cells" / CELL).write_text("{}")
    target = tmp_path / "reference"
    assert cli.publish(tmp_path, target, "extended") == 81
    assert (target / "cells" / CELL).read_text() == "{}"


def test_cli_runs_as_an_installed_module(tmp_path):
    """README's ``python -m llmbench.cli`` works outside the repository and without src/ on
    PYTHONPATH: scripts/setup.sh and .ci/run install the package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "llmbench.cli", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "resume" in done.stdout


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    kwargs.setdefault("capture_output", "stdout" not in kwargs)
    return subprocess.run(
        [sys.executable, "-m", "llmbench.cli", *args], env=env, text=True, timeout=120, **kwargs
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "--gpu-mem", "lots"], "--gpu-mem: cannot read a memory size from 'lots'"),
        (["predict", "--gpu-mem", "lots"], "or a GPU measured here: h100-80gb, h200"),
        (["predict", "--gpu-mem", "0"], "--gpu-mem: cannot read a memory size from '0'"),
        (["predict", "--gpu-mem", "0.5"], "nothing is left for PyTorch once the driver keeps its"),
        (["predict", "--frontier", "--gpu-mem", "24GB,0.5"], "--gpu-mem 0.5: nothing is left"),
        (["predict", "--frontier", "--gpu", "H200", "--gpus", "2"], "--frontier takes"),
        (["predict", "--grid", "nosuch"], "grid 'nosuch': no file"),
        (["tables", "{tmp}/missing"], "no folder {tmp}/missing/cells"),
        (["tables", str(EXTENDED), "--grid", "nosuch"], "grid 'nosuch': no file"),
        (
            ["publish", "--from", "{tmp}/missing", "--to", "{tmp}/ref", "--grid", "seed"],
            "no folder",
        ),
        (["publish", "--from", str(EXTENDED), "--to", "{tmp}/ref", "--grid", "nosuch"], "nosuch"),
        (["resume", "--from", "{tmp}/missing", "--grid", "seed"], "no folder {tmp}/missing"),
        (["resume", "--from", "{tmp}", "--grid", "seed"], "no cells/ or frontier/ folder"),
        (["predict", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["predict", "--frontier"], "--frontier needs a device"),
        (["predict", "--frontier", "--gpu", "a100"], "argument --gpu: invalid choice: 'a100'"),
        (["predict", "--frontier", "--gpu-mem", "24GB,lots"], "--gpu-mem: cannot read"),
        (["predict", "--frontier", "--gpu", "h200", "--gpus", "2"], "--frontier takes"),
        (["predict", "--configfile", "{tmp}/none.yaml"], "--configfile goes with --frontier"),
        (["predict", "--gpu", "h200", "--gpu-mem", "24GB"], "one device: --gpu NAME or --gpu-mem"),
        (["predict", "--gpu", "h200", "--gpu", "h100-80gb"], "one device: --gpu NAME or"),
        (
            ["predict", "--frontier", "--gpu", "h200", "--configfile", "{tmp}/none.yaml"],
            "--configfile: {tmp}/none.yaml: cannot be read",
        ),
        (["predict", "--gpu-mem", "24GB,48GB"], "several sizes go with --frontier"),
        (["predict", "--device-map", "balanced"], "--device-map needs --gpus"),
        (["predict", "--max-gpus", "0"], "--max-gpus needs --gpus"),
        (["predict", "--frontier", "--gpu", "h200", "--max-gpus", "3"], "--frontier takes"),
        (["predict", "--gpu-mem", ""], "--gpu-mem: an empty value"),
        (["predict", "--grid", " "], "--grid: an empty value"),
        (["predict", "--bogus"], "unrecognized arguments: --bogus (see: llmbench predict --help)"),
        (
            ["compare", str(EXTENDED), str(EXTENDED), "--names", "a", "b", "--to", "{tmp}/c"],
            "twice: compare needs two different runs",
        ),
        (
            ["compare", str(EXTENDED), str(SEED), "--names", "a", "a", "--to", "{tmp}/c"],
            "--names: two different, non-empty names",
        ),
        (
            ["publish", "--from", str(REPO / "results/reference/h200/quant"), "--to", "{tmp}/r"]
            + ["--grid", "seed"],
            "none of grid seed's 9 cells has a JSON under",
        ),
    ],
)
def test_user_errors_are_one_line_and_status_2(tmp_path, args, message):
    done = run_cli(*(a.format(tmp=tmp_path) for a in args), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr  # no traceback, no usage block
    assert done.stderr.startswith("llmbench: error: ")
    assert message.format(tmp=tmp_path) in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written on the way


@pytest.mark.parametrize(
    "args, text, message",
    [
        (["predict", "--frontier", "--gpu", "h200"], "frontier:\n  models: tiny-mistral\n", (
            "--configfile {file}: config key 'frontier.models': value 'tiny-mistral' is not of "
            "type array"
        )),
        (["predict", "--frontier", "--gpu", "h200"], "frontier:\n  seq_min: 300\n  seq_max: 290\n",
         "config key 'frontier.seq_min': value 300 is above frontier.seq_max (290)"),
        (["predict", "--frontier", "--gpu", "h200"], "frontier:\n  typo_key: 1\n",
         "config key 'frontier.typo_key' (value 1) is not a known key"),
        (["predict", "--frontier", "--gpu", "h200"], "frontier:\n  memory_budget_gib: .nan\n",
         "config key 'frontier.memory_budget_gib': value nan is not a finite number"),
        (["publish", "--from", str(EXTENDED), "--grid", "seed", "--to"], "a file", "a file, not a"),
        (["tables"], "{", "tables not rebuilt (the previous ones stay): 1 cell file(s) not a"),
    ],
)  # fmt: skip
def test_what_a_command_reads_is_checked_before_it_runs(tmp_path, args, text, message):
    # --configfile is merged and checked as snakemake --configfile is; a --to that is a file,
    # a corrupt cell JSON: one line (the list of bad cells below it), nothing written
    inputs = tmp_path / "in"
    if args[0] == "tables":
        (inputs / "cells").mkdir(parents=True)
        (inputs / "cells" / "x.json").write_text(text)
        args = [*args, str(inputs)]
    else:
        inputs.mkdir()
        (inputs / "file").write_text(text)
        flag = ["--configfile"] if args[0] == "predict" else []
        args = [*args, *flag, str(inputs / "file")]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("llmbench: error: ") and "Traceback" not in done.stderr
    assert message.format(file=inputs / "file") in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_predict_into_a_closed_pipe_stops_quietly():
    """``llmbench predict --grid extended | head -3``: the reader leaves early; the command
    stops without a BrokenPipeError, with status 141 (128 + SIGPIPE) as a Unix filter does."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: deterministic
    try:
        done = run_cli("predict", "--grid", "extended", stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert done.stderr == "", done.stderr
    assert done.returncode == 141


def test_predict_piped_into_head_prints_no_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [
            "bash",
            "-c",
            f"{sys.executable} -m llmbench.cli predict --grid extended --terms | head -3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.startswith("llmbench predict: grid extended, 81 cells")
    assert len(done.stdout.splitlines()) == 3
    assert done.stderr == ""


def test_predict_frontier_checks_the_searched_models_entries(tmp_path):
    # as the run does: a missing architecture file is named, not an "unknown" row and status 0
    frontier = yaml.safe_load((REPO / "config/frontier-tiny.yaml").read_text())
    frontier["frontier"]["models"] = ["m-missing"]
    frontier["models"] = {"m-missing": {"architecture": "config/models/nosuch.json"}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(frontier))
    done = run_cli("predict", "--frontier", "--gpu-mem", "24GiB", "--configfile",
                   str(tmp_path / "f.yaml"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "models.m-missing.architecture: no such file 'config/models/nosuch.json'" in done.stderr


def test_tables_without_grid_says_when_it_drops_seed_case_labels(tmp_path, capsys):
    shutil.copytree(SEED, tmp_path / "seed")
    assert cli.rebuild_tables(tmp_path / "seed", "seed") == 9
    assert "labelled rows with seed cases" not in capsys.readouterr().err
    cli.rebuild_tables(tmp_path / "seed", None)
    assert "without --grid (e.g. --grid seed) the rebuilt table has none" in capsys.readouterr().err
    cli.rebuild_tables(tmp_path / "seed", None)  # nothing labelled any more: nothing to say
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("frontier", [[], ["--frontier"]])
def test_every_mode_notes_a_gpu_mem_that_is_torchs_total(frontier):
    # --gpu-mem is nvidia-smi's total in every mode; torch's total of an H100 (81079MiB) is
    # 480 MiB short of it, so the command says so and names the GPU
    note = "note: --gpu-mem 81079MiB is PyTorch's total of an h100-80gb; --gpu-mem reads"
    tiny = ["--configfile", str(REPO / "config/frontier-tiny.yaml")] if frontier else []
    args = ["predict", *frontier, *tiny, "--format", "csv", "--gpu-mem"]
    torch_total = run_cli(*args, "81079MiB")
    assert torch_total.returncode == 0, torch_total.stderr
    assert note in torch_total.stderr and "(81559MiB): use --gpu h100-80gb" in torch_total.stderr
    nvml_total = run_cli(*args, "81559MiB")
    assert nvml_total.returncode == 0 and "note" not in nvml_total.stderr


def test_predict_fits_to_the_configs_predict_gpu_unless_told(monkeypatch, capsys):
    # the same default as `snakemake predict`: config.yaml's predict_gpu
    from llmbench.cli import common, predict

    shipped = common.repo_config()
    assert shipped["predict_gpu"] == "h100-80gb"
    monkeypatch.setattr(predict, "repo_config", lambda: {**shipped, "predict_gpu": "h200"})
    assert cli.main(["predict", "--grid", "seed"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("device h200: nvidia-smi 143771")
    assert cli.main(["predict", "--grid", "seed", "--gpu", "h100-80gb"]) == 0  # told
    assert capsys.readouterr().out.splitlines()[1].startswith("device h100-80gb: nvidia-smi")
