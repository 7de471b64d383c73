"""An exclusive lock per GPU, held by a cell's parent while the cell's process measures.

Two Snakemake runs on one host (say ``snakemake`` and ``snakemake frontier`` started side by
side) would otherwise measure on the same GPU at the same time, and both runs' numbers would be
wrong without a trace. Each GPU a cell can use gets a lock file named after its NVML UUID in a
host-wide folder; a cell takes them all (in sorted order, so two cells never wait on each
other crosswise) before its process starts and keeps them until it has ended. The locks are
``flock`` locks: the kernel drops them when the holder dies, even by SIGKILL, so a killed run
never leaves a GPU locked. Each lock file names its holder (pid, cell, since), which a waiting
cell prints and records.

May import ``llmbench.host`` (NVML, which never initialises CUDA).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from llmbench.host import nvml

LOCK_DIR_VARIABLE = "LLMBENCH_GPU_LOCK_DIR"
"""Environment variable naming the lock folder; default ``$TMPDIR/llmbench-gpu-locks``, which
every run of one host shares (cluster jobs on one node included)."""

POLL_S = 2.0
"""Seconds between two attempts while another cell holds a GPU."""


def lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The host-wide folder of GPU lock files."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(LOCK_DIR_VARIABLE) or Path(tempfile.gettempdir(), "llmbench-gpu-locks"))


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """Lock keys of the GPUs a cell started with ``environ`` can use: NVML UUIDs, in
    ``CUDA_VISIBLE_DEVICES`` order (indices count in PCI order, as the worker's
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes CUDA count); every GPU when it is unset; none when
    it hides all or NVML is missing. An entry NVML cannot resolve is kept as written."""
    environ = os.environ if environ is None else environ
    if not nvml.available():
        return []
    uuids = nvml.uuids()
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return uuids
    keys = []
    for entry in (e.strip() for e in visible.split(",")):
        if not entry or entry == "-1":
            break  # CUDA stops at the first invalid entry
        if entry.isdigit():
            keys.append(uuids[int(entry)] if int(entry) < len(uuids) else f"index-{entry}")
        else:
            match = [
                u for u in uuids if u.removeprefix("GPU-").startswith(entry.removeprefix("GPU-"))
            ]
            keys.append(match[0] if match else entry)
    return keys


def _holder(handle: TextIO) -> dict[str, Any] | None:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "null")
    except ValueError:
        return None


def _take(path: Path, me: Mapping[str, Any], say: Callable[[str], None]) -> tuple[TextIO, float]:
    """Block until ``path`` is locked by this process; returns the open file and the wait (s)."""
    started = time.monotonic()
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not told:
                say(f"waiting for {path.name}: held by {_holder(handle) or 'another process'}")
                told = True
            time.sleep(POLL_S)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(dict(me)))
    handle.flush()
    return handle, time.monotonic() - started


@contextmanager
def exclusive_gpus(
    keys: Sequence[str],
    holder: Mapping[str, Any],
    say: Callable[[str], None] = print,
    directory: Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Hold the lock of every GPU in ``keys`` for the ``with`` block.

    ``holder`` is written into each lock file (e.g. the cell and the pid) so that a waiting
    cell can say whom it waits for (through ``say``). Yields a record for the cell JSON:
    ``{"gpus": [...], "wait_s": seconds waited in all}``. Raises OSError when the lock folder
    cannot be created or written.
    """
    directory = lock_dir() if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(directory, 0o1777)  # shared by every user's runs, like /tmp itself
    except OSError:
        pass  # someone else's folder: creating our files in it is what matters
    me = {**holder, "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    held: list[TextIO] = []
    waited = 0.0
    try:
        for key in sorted(set(keys)):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
            handle, wait_s = _take(directory / f"gpu-{safe}.lock", me, say)
            held.append(handle)
            waited += wait_s
        yield {"gpus": sorted(set(keys)), "wait_s": waited}
    finally:
        for handle in reversed(held):
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
