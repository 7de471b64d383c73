"""Scratch folders in ``$TMPDIR`` that a killed run does not leave behind.

Each folder is named after the process that owns it (pid and start time, so a reused pid is
not mistaken for its owner; short, as a Unix socket's path must be) and is removed when that
process exits or leaves the :func:`folder` block. A process killed by
SIGKILL cannot remove its own: :func:`remove_stale` removes every folder whose owner is gone,
and the workflow calls it each time it is loaded (a rerun, ``--unlock``, a dry run).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "llmbench-"
STAMPED = re.compile(rf"^{PREFIX}[a-z]+-(\d+)\.([0-9a-z]+)-")
"""``llmbench-<kind>-<pid>.<start time, base 36>-<random>``: a folder whose owner can be
checked."""


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux); None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            return digits


def _stamp(pid: int) -> str:
    return f"{pid}.{_base36(_start_time(pid) or 0)}"


def owner_alive(pid: int, start: int) -> bool:
    """Whether the process that made a folder stamped ``pid.start`` still runs."""
    if start:  # stamped where /proc tells start times
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(directory: Path | str | None = None) -> list[Path]:
    """Remove the scratch folders in ``directory`` (``$TMPDIR``) whose owner is gone."""
    removed = []
    with os.scandir(directory or tempfile.gettempdir()) as entries:
        for entry in entries:
            match = STAMPED.match(entry.name)
            if match and entry.is_dir(follow_symlinks=False):
                if not owner_alive(int(match.group(1)), int(match.group(2), 36)):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(Path(entry.path))
    return removed


def _new(kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{_stamp(os.getpid())}-"))


def make_dir(kind: str) -> Path:
    """A new scratch folder owned by this process, removed when it exits."""
    path = _new(kind)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@contextlib.contextmanager
def folder(kind: str) -> Iterator[Path]:
    """A scratch folder owned by this process for the ``with`` block (as
    ``tempfile.TemporaryDirectory``, but removed by :func:`remove_stale` if the process is
    killed inside the block)."""
    path = _new(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
