"""Cluster submission through profiles/slurm/, tested against a real Slurm.

The tests marked ``slurm`` start a single-node Slurm on this machine (tests/slurm_cluster.py),
run the smoke grid through snakemake-executor-plugin-slurm with only the partition set for
the test, and compare cells and tables with the local smoke run. Where Slurm cannot be
installed they skip, saying why; with LLMBENCH_REQUIRE_SLURM=1 (CI) they fail instead.

The other tests need no cluster: how the profile's settings reach the jobs, and a cell whose
job is about to end (the time-limit and retry functions themselves: tests/run/test_limits.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import HEAD, copy_repo, run_fake_cell
from slurm_cluster import SlurmCluster, ensure_installed

from llmbench.run.limits import effective_timeout, parse_slurm_time

PROFILE = "profiles/slurm"
REQUIRE_SLURM = os.environ.get("LLMBENCH_REQUIRE_SLURM") == "1"

# What profiles/slurm/config.yaml asks for a cell; the sbatch lines must say the same.
CELL_SBATCH_OPTIONS = ("-t 40", "--mem 32000", "--cpus-per-task=8", "--gpus=1")
CELL_RUNTIME_MIN = 40
RETRIES = 2

VOLATILE_COLUMNS = re.compile(
    r"(^|_)(ms|s)(_|$)|host_|overhead|_j_per_token|^(mfu|mbu)$|^start_method$|^finished_at$"
)
"""Columns that differ between any two runs of the same cells: times (``*_s``, ``*_ms*``),
rates derived from them (``*_per_s``, mfu, mbu), host memory, energy, when the record was
written (``finished_at``), and how the cell's process started (forked from the warm-start
server locally, a fresh interpreter under Slurm)."""


def without_site_settings(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the LLMBENCH_SLURM_* settings the profile reads (a tester's own)."""
    return {name: value for name, value in env.items() if not name.startswith("LLMBENCH_SLURM_")}


def skip_or_fail(reason: str) -> None:
    """Skip with the exact reason, or fail where Slurm is required (CI)."""
    if REQUIRE_SLURM:
        pytest.fail(f"LLMBENCH_REQUIRE_SLURM=1, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_plugin() -> None:
    """The executor plugin the profile names (it also defines the profile's slurm-* keys)."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        skip_or_fail(
            "snakemake-executor-plugin-slurm is not installed "
            "(pip install -r requirements/test.txt)"
        )


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory, slurm_plugin: None):
    """A running single-node Slurm, torn down by PID afterwards, even when a test fails."""
    if os.geteuid() != 0:
        skip_or_fail("the test cluster runs slurmd and its jobs as root, and this is not root")
    reason = ensure_installed()
    if reason is not None:
        skip_or_fail(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class SlurmRun:
    """The smoke grid run through Slurm: its directory and Snakemake's (verbose) output."""

    workdir: Path
    output: str
    wall_s: float


def run_with_profile(workdir: Path, cluster: SlurmCluster, *args: str) -> SlurmRun:
    """``snakemake --workflow-profile profiles/slurm ARGS --verbose`` in ``workdir``, with the
    partition (an environment variable the profile reads) the only test setting."""
    env = {
        **without_site_settings(cluster.env),
        "LLMBENCH_SLURM_PARTITION": cluster.partition,
        # As for the local smoke run (conftest): CPU cells, and the commit of this checkout.
        "CUDA_VISIBLE_DEVICES": "",
        "LLMBENCH_GIT_COMMIT": HEAD,
    }
    # --verbose makes the plugin log its sbatch calls.
    command = [sys.executable, "-m", "snakemake", "--workflow-profile", PROFILE, *args, "--verbose"]
    started = time.monotonic()
    process = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=3600
    )
    wall_s = time.monotonic() - started
    output = process.stdout + process.stderr
    log = workdir / "snakemake-slurm.log"
    log.write_text(output)
    if process.returncode != 0:
        raise AssertionError(
            f"the Slurm run failed ({process.returncode}) after {wall_s:.0f} s:\n"
            f"{output[-8000:]}\n{cluster.logs()}"
        )
    print(f"\nsnakemake {' '.join(args)} through Slurm: {wall_s:.0f} s, log {log}")
    return SlurmRun(workdir, output, wall_s)


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory: pytest.TempPathFactory, slurm_cluster: SlurmCluster) -> SlurmRun:
    """The smoke grid, run through Slurm in a copy of the repo."""
    workdir = copy_repo(tmp_path_factory.mktemp("slurm-run") / "repo")
    return run_with_profile(workdir, slurm_cluster, "--config", "grid=smoke")


def cell_results(workdir: Path) -> dict[str, dict]:
    """Every cell JSON of a run, by path below results/cells/."""
    cells = workdir / "results" / "cells"
    return {
        path.relative_to(cells).as_posix(): json.loads(path.read_text())
        for path in sorted(cells.rglob("*.json"))
    }


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """cells.csv without the columns that differ between any two runs, in a fixed order."""
    kept = table.drop(columns=[name for name in table.columns if VOLATILE_COLUMNS.search(name)])
    return kept.sort_values("path").reset_index(drop=True)


@pytest.mark.slurm
@pytest.mark.integration
def test_every_job_went_through_sbatch(slurm_run: SlurmRun, slurm_cluster: SlurmCluster):
    submitted = dict(
        re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", slurm_run.output)
    )
    slurm_ids = set(submitted.values())
    cells = cell_results(slurm_run.workdir)
    # Cells, checkpoints, tables and figures: every job of the DAG but the target rule.
    assert len(slurm_ids) > len(cells)
    cell_job_ids = [cell["environment"]["slurm_job_id"] for cell in cells.values()]
    assert len(set(cell_job_ids)) == len(cells) and set(cell_job_ids) <= slurm_ids
    known_to_slurm = set(slurm_cluster.run("squeue", "--states=all", "-h", "-o", "%i").split())
    assert slurm_ids <= known_to_slurm

    cell_sbatch = re.findall(
        r"sbatch call: (sbatch .*rule_measure_cell\S*.*?) --wrap", slurm_run.output
    )
    assert len(cell_sbatch) == len(cells)
    for line in cell_sbatch:
        assert f"-p {slurm_cluster.partition} " in line, line
        for option in CELL_SBATCH_OPTIONS:
            assert re.search(rf"(^| ){re.escape(option)}( |$)", line), (option, line)


@pytest.mark.slurm
@pytest.mark.integration
def test_every_cell_has_the_status_of_the_local_run(smoke_run: Path, slurm_run: SlurmRun):
    local = {path: cell["status"] for path, cell in cell_results(smoke_run).items()}
    slurm = {path: cell["status"] for path, cell in cell_results(slurm_run.workdir).items()}
    assert slurm == local


@pytest.mark.slurm
@pytest.mark.integration
def test_tables_match_the_local_run_up_to_timing(smoke_run: Path, slurm_run: SlurmRun):
    local = pd.read_csv(smoke_run / "results" / "tables" / "cells.csv")
    slurm = pd.read_csv(slurm_run.workdir / "results" / "tables" / "cells.csv")
    assert {"status", "weight_gib", "quant_check_passed"} <= set(comparable(local).columns)
    pd.testing.assert_frame_equal(comparable(slurm), comparable(local))


@pytest.mark.slurm
@pytest.mark.integration
def test_cells_know_their_job_runtime_time_left_and_attempts(slurm_run: SlurmRun):
    for path, cell in cell_results(slurm_run.workdir).items():
        limits = cell["timing_breakdown"]
        assert limits["job_runtime_min"] == CELL_RUNTIME_MIN, path
        assert 0 < limits["job_time_left_s"] <= CELL_RUNTIME_MIN * 60, path
        assert limits["time_limit_s"] == effective_timeout(
            cell["settings"]["cell_timeout_s"], CELL_RUNTIME_MIN, limits["job_time_left_s"]
        )
        log = (slurm_run.workdir / "logs" / "cells" / path).with_suffix(".log").read_text()
        assert f"attempt 1 of {RETRIES + 1};" in log, path
        # no warm-start server under a cluster executor: each cell is a fresh interpreter
        assert limits["start_method"] == "spawn", path
    assert not (slurm_run.workdir / "logs" / "warmstart.log").exists()


@pytest.mark.slurm
@pytest.mark.integration
def test_gpu_jobs_run_side_by_side(slurm_run: SlurmRun, slurm_cluster: SlurmCluster):
    listing = slurm_cluster.run("squeue", "--states=all", "-h", "-o", "%k|%S|%e")
    spans = sorted(
        (parse_slurm_time(start), parse_slurm_time(end))
        for comment, start, end in (line.split("|") for line in listing.splitlines())
        if comment.startswith("rule_measure_cell")
    )
    # Slurm had two GPUs: some cell started before the one before it ended.
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


@pytest.mark.slurm
@pytest.mark.integration
def test_cell_that_outlasts_its_job_runtime_ends_as_a_timeout_cell(
    tmp_path: Path, slurm_run: SlurmRun, slurm_cluster: SlurmCluster
):
    workdir = copy_repo(tmp_path / "repo")
    # The smoke run's tiny checkpoints, so that only the cell runs.
    shutil.copytree(slurm_run.workdir / "resources", workdir / "resources")
    # Warm-up passes that never end; a --configfile of one's own replaces the profile's, so
    # it says on_missing_gpu: ignore too (profiles/README.md).
    (workdir / "endless.yaml").write_text(
        "on_missing_gpu: ignore\nmeasurement:\n  warmup: 100000000\n"
    )
    target = "results/cells/tiny-mistral/none/sdpa/bfloat16/b1_s256.json"
    run_with_profile(
        workdir,
        slurm_cluster,
        target,
        "--configfile",
        "endless.yaml",
        "--set-resources",
        "measure_cell:runtime=1",
        "--config",
        "grid=smoke",
    )
    cell = json.loads((workdir / target).read_text())
    limits = cell["timing_breakdown"]
    assert cell["status"] == "timeout", cell["reason"]
    assert limits["job_runtime_min"] == 1 and limits["time_limit_s"] < 60
    # The cell ended its job itself, before Slurm's limit: a completed job, not a killed one.
    job_id = cell["environment"]["slurm_job_id"]
    state = slurm_cluster.run("squeue", "--states=all", "-h", "-j", job_id, "-o", "%T")
    assert state.strip() == "COMPLETED"


# --- No cluster needed: the profile's settings, as Snakemake resolves them (dry runs). ---


@pytest.fixture(scope="module")
def profile_copy(tmp_path_factory: pytest.TempPathFactory, slurm_plugin: None) -> Path:
    return copy_repo(tmp_path_factory.mktemp("slurm-profile") / "repo")


def dry_run(workdir: Path, *args: str, **env: str) -> str:
    """Snakemake's dry run with the Slurm profile on this (usually GPU-less) host."""
    process = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", PROFILE, *args],
        cwd=workdir,
        env={**without_site_settings(dict(os.environ)), "CUDA_VISIBLE_DEVICES": "", **env},
        capture_output=True,
        text=True,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-6000:]
    return output


def resources_of(output: str, rule: str) -> set[str]:
    """The distinct ``resources:`` lines of a rule's jobs in a dry run."""
    blocks = re.findall(rf"^rule {rule}:\n(.*?)(?=^\S|\Z)", output, flags=re.M | re.S)
    return {line.strip() for block in blocks for line in block.splitlines() if "resources:" in line}


def test_profile_keeps_the_configured_grid_on_a_gpu_less_submit_host(profile_copy: Path):
    output = dry_run(profile_copy, "--config", "grid=extended")
    assert "No CUDA GPU was found" not in output
    assert "results/cells/mistral-7b-v0.3/" in output


def test_profile_asks_slurm_for_a_gpu_and_the_cell_runtime(profile_copy: Path):
    (cell_resources,) = resources_of(
        dry_run(profile_copy, "--config", "grid=smoke"), "measure_cell"
    )
    for resource in ("runtime=40", "mem_mb=32000", "cpus_per_task=8", "gpu=1"):
        assert re.search(rf"\b{resource}\b", cell_resources), cell_resources
    assert "slurm_partition" not in cell_resources  # unset: the cluster's default partition


def test_site_settings_come_from_the_environment(profile_copy: Path):
    output = dry_run(
        profile_copy,
        "--config",
        "grid=smoke",
        LLMBENCH_SLURM_PARTITION="all",
        LLMBENCH_SLURM_ACCOUNT="lab-42",
        LLMBENCH_SLURM_GPU_MODEL="h100",
    )
    (cell_resources,) = resources_of(output, "measure_cell")
    for resource in ("slurm_partition=all", "slurm_account=lab-42", "gpu_model=h100", "gpu=1"):
        assert re.search(rf"\b{resource}(,|$)", cell_resources), cell_resources
    (table_resources,) = resources_of(output, "aggregate_cells")
    assert "slurm_partition=all" in table_resources and "gpu" not in table_resources

    gres_output = dry_run(profile_copy, "--config", "grid=smoke", LLMBENCH_SLURM_GRES="gpu:a100:1")
    (cell_resources,) = resources_of(gres_output, "measure_cell")
    # A gres request replaces --gpus (the plugin would pass both).
    assert re.search(r"\bgres=gpu:a100:1\b", cell_resources) and re.search(
        r"\bgpu=0\b", cell_resources
    )


def test_cell_whose_job_is_about_to_end_writes_a_timeout_cell(tmp_path, fake_path):
    timeout_s = effective_timeout(1800, CELL_RUNTIME_MIN, job_time_left_s=62)
    result = run_fake_cell(
        tmp_path,
        "hang",
        timeout_s,
        time_limit_inputs={"job_runtime_min": CELL_RUNTIME_MIN, "job_time_left_s": 62},
    )
    out = tmp_path / "cell.json"
    assert json.loads(out.read_text())["status"] == "timeout"
    assert result["timing_breakdown"]["time_limit_s"] == pytest.approx(2)
    assert result["timing_breakdown"]["job_time_left_s"] == 62
