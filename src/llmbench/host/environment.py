"""The environment a cell ran in: host, GPUs, driver, CUDA, library versions, git commit."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from llmbench import REPO_ROOT
from llmbench.host import nvml

PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "flash_attn",
    "safetensors",
    "nvidia-ml-py",
    "snakemake",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the measurement stack, read from metadata (nothing imported)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_head(repo: Path) -> str | None:
    """HEAD of the checkout at ``repo``, or None where it is no git checkout or git is missing."""
    try:
        process = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return process.stdout.strip() if process.returncode == 0 else None


def git_commit() -> dict[str, Any]:
    """Commit of the checkout and whether it had uncommitted changes.

    Falls back to LLMBENCH_GIT_COMMIT (set by the workflow) where the run directory is not a
    git checkout, e.g. a copy on a cluster node. Where both exist and disagree, the declared
    commit wins and the checkout's HEAD is kept beside it: a copied tree can carry a stale
    ``.git`` (on the H100 host a copy whose HEAD was older than the code it held reported that
    older commit as "dirty").
    """
    commit = git_head(REPO_ROOT)
    declared = os.environ.get("LLMBENCH_GIT_COMMIT")
    if commit is None:
        return {"commit": declared, "dirty": None}
    if declared and declared != commit:
        return {
            "commit": declared,
            "dirty": None,
            "source": "LLMBENCH_GIT_COMMIT",
            "checkout_head": commit,
        }
    try:
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": commit, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def cpu_model() -> str | None:
    """CPU model name from /proc/cpuinfo."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def capture_host() -> dict[str, Any]:
    """What can be known without importing torch (also used for cells whose child died)."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "git": git_commit(),
        "nvidia_driver": nvml.driver_version(),
        "cuda_driver_supports": nvml.cuda_driver_version(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "flash_attn_build": os.environ.get("LLMBENCH_FLASH_ATTN_BUILD"),
        # The caching allocator's settings change reserved memory (expandable_segments).
        "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }


def capture_torch() -> dict[str, Any]:
    """Torch's view: CUDA runtime, cuDNN, and each visible GPU with its NVML state."""
    import torch

    info: dict[str, Any] = {
        "torch_cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "num_threads": torch.get_num_threads(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            handle = nvml.handle_for_cuda_index(index)
            info["gpus"].append(
                {
                    "device": f"cuda:{index}",
                    "name": props.name,
                    "uuid": str(getattr(props, "uuid", "")) or None,
                    "capability": f"{props.major}.{props.minor}",
                    "total_memory_bytes": props.total_memory,
                    "multiprocessors": props.multi_processor_count,
                    "power_limit_w": nvml.power_limit_w(handle),
                    "clocks_mhz": nvml.clocks_mhz(handle),
                }
            )
    return info
