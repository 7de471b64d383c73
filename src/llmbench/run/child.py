"""The environment a cell's child process starts with (fresh interpreter or forked).

Shared by the runner and the warm-start server, which both start workers. Imports only
llmbench's constants.
"""

from __future__ import annotations

import os

from llmbench import REPO_ROOT


def worker_environment() -> dict[str, str]:
    """Environment of the child: the package importable, CUDA devices in PCI order."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
