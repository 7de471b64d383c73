"""Shared fixtures: the repository, a copy of it to run Snakemake in, and one smoke run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


HEAD = subprocess.run(
    ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
).stdout.strip()


def tracked_files() -> list[str]:
    """Files git tracks plus new ones not ignored: what a fresh clone would hold."""
    listing = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listing.split("\0") if name and (REPO / name).is_file()]


def copy_repo(destination: Path) -> Path:
    """A copy of the checkout (no results, caches or logs) to run Snakemake in."""
    for name in tracked_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return destination


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the snakemake CLI of this interpreter's environment in ``workdir``."""
    # The copy is no git checkout: pass the commit the way a cluster job gets it.
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "LLMBENCH_GIT_COMMIT": HEAD,
    }
    command = [sys.executable, "-m", "snakemake", *args]
    process = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    if check and process.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({process.returncode}):\n"
            f"{process.stdout[-4000:]}\n{process.stderr[-6000:]}"
        )
    return process


FAKES = Path(__file__).parent / "fakes"
FAKE_CELL_SETTINGS = {"measurement": {}, "device": "cpu", "device_map": "auto"}


@pytest.fixture
def fake_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/fakes/fake_worker.py importable by cell workers (``python -m fake_worker``)."""
    paths = [str(FAKES), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


def run_fake_cell(tmp_path: Path, behaviour: str, timeout_s: float = 30.0, **kwargs) -> dict:
    """Run a cell whose worker misbehaves as ``behaviour``; the JSON must exist and be valid."""
    from llmbench.grid.spec import Cell
    from llmbench.record.cell import validate_cell_result
    from llmbench.run.runner import run_cell

    out = tmp_path / "cell.json"
    startup = {"fake_startup_s": kwargs.pop("fake_startup_s")} if "fake_startup_s" in kwargs else {}
    result = run_cell(
        cell=Cell("tiny-mistral", "none", "sdpa", "bfloat16", 1, 8),
        settings={"fake": behaviour, **FAKE_CELL_SETTINGS, **startup},
        model_entry={},
        base_dir=None,
        prequantized_dir=None,
        out_path=out,
        log_path=tmp_path / "cell.log",
        timeout_s=timeout_s,
        worker_module="fake_worker",
        **kwargs,
    )
    validate_cell_result(result, where=str(out))
    assert out.is_file()
    return result


def kill_runner_of_hanging_worker(tmp_path: Path) -> int:
    """Start a runner process whose fake worker hangs, SIGKILL the runner once the worker is
    up (as a scheduler killing the job would), and return the worker's pid."""
    import re
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "cell.log"
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from llmbench.grid.spec import Cell; "
            "from llmbench.run.runner import run_cell; "
            f"run_cell(cell=Cell('m','none','sdpa','bfloat16',1,8), settings={{'fake': 'hang', "
            "'measurement': {}, 'device': 'cpu', 'device_map': 'auto'}, model_entry={}, "
            f"base_dir=None, prequantized_dir=None, out_path=Path({str(tmp_path / 'c.json')!r}), "
            f"log_path=Path({str(log)!r}), timeout_s=600, worker_module='fake_worker')",
        ]
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "pid=" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    worker_pid = int(re.search(r"pid=(\d+)", log.read_text()).group(1))
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    return worker_pid


def process_gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        if not status.exists() or "zombie" in status.read_text():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo in which the smoke grid ran once, end to end, on the CPU."""
    workdir = copy_repo(tmp_path_factory.mktemp("smoke") / "repo")
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", "--config", "grid=smoke")
    return workdir
