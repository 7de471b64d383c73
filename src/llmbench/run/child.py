"""The environment a cell's child process starts with (fresh interpreter or forked).

Shared by the runner and the warm-start server, which both start workers. Imports only
llmbench's constants, the model registry's download rule and the allocator settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from llmbench import REPO_ROOT
from llmbench.grid.models import allows_download
from llmbench.measure.allocator import ENV_VARIABLE as ALLOC_CONF
from llmbench.measure.allocator import SETTINGS as ALLOC_SETTINGS

HUB_OFFLINE = "HF_HUB_OFFLINE"
"""huggingface_hub's switch: "1" makes every Hub request fail at once instead of retrying."""


def worker_environment(
    model_entry: Mapping[str, Any] | None = None, allocator: str | None = None
) -> dict[str, str]:
    """Environment of the child: the package importable, CUDA devices in PCI order, the Hub
    off (``HF_HUB_OFFLINE=1``) unless ``model_entry`` allows downloads
    (``allow_download: true``; without an entry the Hub is off), and, for a cell's
    ``allocator`` (None: the server's own environment, left as it is), its
    ``PYTORCH_CUDA_ALLOC_CONF``. Raises KeyError for an unknown allocator."""
    env = dict(os.environ)
    if allocator is not None:
        # A value inherited from the user's environment is replaced (or removed for
        # "default"), so the cell runs in the mode its path names.
        setting = ALLOC_SETTINGS[allocator]
        if setting is None:
            env.pop(ALLOC_CONF, None)
        else:
            env[ALLOC_CONF] = setting
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not allows_download(model_entry):
        env[HUB_OFFLINE] = "1"
    return env
