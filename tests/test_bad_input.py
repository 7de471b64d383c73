"""Bad input and faults, as a new user meets them (issue "Bad input and faults"): each kind
stops before any job with one message that names the file or the key, or ends well.

1. files that do not parse name the file, line and column;
2. model architecture files are checked before any job (parsed, built by transformers);
5. pretrained paths must exist, and cells run with the Hub off unless the entry opts in;
6. a config typo prints one short line, booleans take the usual spellings, and a killed run
   says how to go on and leaves no scratch folder in $TMPDIR.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAKE_CELL_SETTINGS, copy_repo, snakemake

from llmbench.grid.spec import Cell
from llmbench.run.child import worker_environment
from llmbench.run.runner import run_cell

ONE_CELL = "blocks:\n  - {models: [tiny-mistral], quant: [none], attn: [sdpa], dtype: [float32], batch: [1], seq: [8]}\n"  # noqa: E501


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("bad") / "repo")


def dry_run_fails(workdir: Path, *args: str) -> str:
    """Output of a dry run that must stop before any job."""
    process = snakemake(workdir, "-n", *args, check=False)
    output = process.stdout + process.stderr
    assert process.returncode != 0, output
    assert "Job stats" not in output
    return output


# ---- 1. parse errors name the file ----------------------------------------------------------


def test_grid_file_that_is_not_yaml_names_the_file_line_and_column(workdir):
    grid = workdir / "config" / "grids" / "broken.yaml"
    grid.write_text("blocks:\n  - models: [tiny-mistral]\n    quant: [none\n    attn: [sdpa]\n")
    output = dry_run_fails(workdir, "--config", "grid=broken")
    assert f"{grid}:4:9: not valid YAML" in output
    assert "<unicode string>" not in output


def test_configfile_that_is_not_yaml_is_named_by_the_validate_command(workdir, tmp_path):
    broken = tmp_path / "mine.yaml"
    broken.write_text("grid: [smoke\ndevice: cpu\n")
    # Snakemake reads --configfile before the workflow starts and names no file: this pins
    # that it still stops at once, and README's advice, the command that names the file.
    output = dry_run_fails(workdir, "--configfile", str(broken))
    assert "Config file is not valid JSON or YAML" in output
    checked = subprocess.run(
        [sys.executable, "-m", "llmbench.grid.validate", str(broken)],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(workdir / "src")},
    )
    assert checked.returncode == 1
    assert checked.stderr.startswith(f"{broken}:2:7: not valid YAML")


def test_config_yaml_that_is_not_yaml_names_the_file_line_and_column(tmp_path):
    """The workflow's own config.yaml is read by our code before Snakemake's (which names
    neither file nor line)."""
    repo = copy_repo(tmp_path / "repo")
    config = repo / "config" / "config.yaml"
    config.write_text(config.read_text() + "grid: [seed\nreport_root: results\n")
    output = dry_run_fails(repo)
    assert f"{config}:" in output and ": not valid YAML" in output
    assert "Config file is not valid JSON or YAML" not in output
    assert "llmbench: error: " in output and '  File "' not in output  # no traceback


def test_configfile_setting_a_key_twice_names_both_lines_without_a_traceback(workdir, tmp_path):
    # Snakemake would keep the second silently; the Snakefile reads every --configfile first
    twice = tmp_path / "twice.yaml"
    twice.write_text("grid: seed\ndevice: cpu\ngrid: smoke\n")
    output = dry_run_fails(workdir, "--configfile", str(twice))
    assert f"llmbench: error: {twice}:3:1: not valid YAML" in output, output
    assert '  File "' not in output and "Error in file" not in output


# ---- 2(a). architecture files are checked before any job --------------------------------------


def test_architecture_that_is_not_json_stops_before_any_job(workdir, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "model_type": "mistral"\n  "hidden_size": 128\n}\n')
    override = tmp_path / "models.yaml"
    override.write_text(f"models:\n  broken-model:\n    architecture: {broken}\n")
    output = dry_run_fails(workdir, "--configfile", str(override))
    assert f"models.broken-model.architecture: {broken}:3:3: not valid JSON" in output


def test_architecture_transformers_cannot_build_stops_before_any_job(workdir, tmp_path, repo):
    config = json.loads((repo / "config" / "models" / "tiny-mistral.json").read_text())
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({**config, "model_type": "mistrall"}))
    override = tmp_path / "models.yaml"
    override.write_text(f"models:\n  typo-model:\n    architecture: {typo}\n")
    output = dry_run_fails(workdir, "--configfile", str(override))
    assert f"models.typo-model.architecture: {typo}: model_type 'mistrall' is not known" in output


# ---- 5. pretrained paths, and the Hub off by default ------------------------------------------


def test_pretrained_folder_that_does_not_exist_stops_before_any_job(workdir, tmp_path):
    override = tmp_path / "models.yaml"
    override.write_text("models:\n  my-llama:\n    pretrained: /data/no-such-llama\n")
    output = dry_run_fails(workdir, "--configfile", str(override))
    assert "models.my-llama.pretrained: no such folder '/data/no-such-llama'" in output


def test_hub_id_is_accepted_only_where_the_entry_allows_downloads(workdir, tmp_path):
    override = tmp_path / "models.yaml"
    override.write_text("models:\n  hub-llama:\n    pretrained: meta-llama/Llama-3.1-8B\n")
    assert "allow_download: true" in dry_run_fails(workdir, "--configfile", str(override))
    override.write_text(
        "models:\n  hub-llama:\n    pretrained: meta-llama/Llama-3.1-8B\n    allow_download: yes\n"
    )
    snakemake(workdir, "-n", "--configfile", str(override))


def test_cells_run_with_the_hub_off_unless_their_entry_allows_downloads(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert worker_environment()["HF_HUB_OFFLINE"] == "1"
    assert worker_environment({"architecture": "x.json"})["HF_HUB_OFFLINE"] == "1"
    allowed = {"pretrained": "org/name", "allow_download": True}
    assert "HF_HUB_OFFLINE" not in worker_environment(allowed)


def test_a_cells_process_runs_with_the_hub_off(tmp_path, fake_path, monkeypatch):
    """End to end through the runner: the worker's process sees HF_HUB_OFFLINE=1."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "hub_echo.py").write_text(
        "import os, sys\n"
        "from llmbench.record.cell import new_result, read_json, write_json_atomic\n"
        "spec = read_json(sys.argv[1])\n"
        "result = new_result(spec['cell'], spec['settings'])\n"
        "result.update(status='unsupported', reason=f\"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}\")\n"  # noqa: E501
        "write_json_atomic(spec['partial_path'], result)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ['PYTHONPATH']}")
    result = run_cell(
        cell=Cell("tiny-mistral", "none", "sdpa", "bfloat16", 1, 8),
        settings=FAKE_CELL_SETTINGS,
        model_entry={"architecture": "config/models/tiny-mistral.json"},
        base_dir=None,
        prequantized_dir=None,
        out_path=tmp_path / "cell.json",
        timeout_s=60,
        worker_module="hub_echo",
    )
    assert result["reason"] == "HF_HUB_OFFLINE=1"


def test_offline_load_of_a_missing_folder_says_so_at_once(monkeypatch):
    pytest.importorskip("transformers")
    from llmbench.measure import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kwargs = models.load_kwargs(
        quant="none",
        attn_implementation="sdpa",
        dtype="float32",
        device_map="cpu",
        compute_dtype="bfloat16",
    )
    assert kwargs["local_files_only"] is True
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match="'/data/no-such-llama' is not a local folder"):
        models.load("/data/no-such-llama", kwargs)
    assert time.monotonic() - started < 5


# ---- 6. messages a person can act on -----------------------------------------------------------


def test_config_typo_prints_one_short_line_with_key_value_and_allowed(workdir):
    output = dry_run_fails(workdir, "--config", "devce=cpu")
    assert len(output.splitlines()) < 15, output
    assert "config key 'devce' (value 'cpu') is not a known key; did you mean 'device'?" in output
    assert "Known keys here: bnb_4bit_compute_dtype" in output
    assert "Failed validating" not in output and "'$schema'" not in output
    output = dry_run_fails(workdir, "--config", "device=tpu")
    assert len(output.splitlines()) < 15, output
    assert "config key 'device': value 'tpu' is not one of: auto, cuda, cpu" in output


@pytest.mark.parametrize("spelling", ["false", "no", "Off", "0"])
def test_lower_case_booleans_are_accepted_on_the_command_line(workdir, spelling):
    snakemake(workdir, "-n", "--config", f"warm_start={spelling}", f"prequantize={spelling}")


def test_scratch_folder_of_a_killed_process_is_removed_and_a_live_ones_kept(tmp_path):
    from llmbench.run import scratch

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = (
        "import os, signal; from llmbench.run import scratch; "
        "print(scratch.make_dir('ws'), flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    left = Path(killed.stdout.strip())
    assert left.parent == tmp_path and left.is_dir()
    other = tmp_path / "llmbench-unrelated"
    other.mkdir()
    tempfile.tempdir, saved = str(tmp_path), tempfile.tempdir
    try:
        live = scratch.make_dir("ws")
        with scratch.folder("cell") as block:
            assert scratch.remove_stale() == [left]
            assert live.is_dir() and block.is_dir() and other.is_dir()
        assert not block.exists()
    finally:
        tempfile.tempdir = saved


@pytest.mark.integration
def test_killed_run_says_unlock_and_leaves_no_scratch_folder(tmp_path):
    workdir = copy_repo(tmp_path / "repo")
    (workdir / "one.yaml").write_text(ONE_CELL)
    scratch_dir = Path(tempfile.mkdtemp(prefix="lbt-"))  # short: the socket's path is limited
    env = {**os.environ, "TMPDIR": str(scratch_dir), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "snakemake", "--cores", "1"]
    config = ["--config", "grid=one.yaml", "device=cpu"]
    try:
        run = subprocess.Popen(
            [*command, *config],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not list(scratch_dir.glob("llmbench-*/warmstart.sock")):
            assert time.monotonic() < deadline and run.poll() is None, "no warm-start server"
            time.sleep(0.2)
        jobs = psutil.Process(run.pid).children(recursive=True)
        run.send_signal(signal.SIGKILL)
        run.wait()
        psutil.wait_procs(jobs, timeout=120)  # jobs outlive Snakemake and finish their cell
        again = subprocess.run(
            [*command, *config], cwd=workdir, env=env, capture_output=True, text=True
        )
        assert again.returncode != 0
        assert "LockException" in again.stderr and "--unlock" in again.stderr
        subprocess.run(
            [*command, "--unlock"], cwd=workdir, env=env, capture_output=True, check=True
        )
        assert not list(scratch_dir.glob("llmbench-*"))
    finally:
        subprocess.run(["rm", "-rf", str(scratch_dir)], check=False)


def test_the_allocator_axis_sets_or_clears_the_cells_alloc_conf(monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert worker_environment(None, "expandable_segments")["PYTORCH_CUDA_ALLOC_CONF"] == (
        "expandable_segments:True"
    )
    assert "PYTORCH_CUDA_ALLOC_CONF" not in worker_environment(None, "default")
    # no axis given (the warm-start server): the environment is left as it is
    assert worker_environment()["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
