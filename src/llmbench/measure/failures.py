"""Failures are data: classify an exception into a cell status with its evidence.

The seed notebook printed "OOM" for any exception. Here an out-of-memory error, a missing
package, an unsupported combination and any other error are told apart, and the message is
kept, so a reader can check the classification.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STATUSES: tuple[str, ...] = (
    "ok",
    "oom",
    "unsupported",
    "unavailable",
    "error",
    "timeout",
    "crashed",
    "check_failed",
)
"""Cell statuses. ``check_failed``: the measurement ran but a truth check failed (for example a
requested quantization that was not applied), so its numbers do not describe the cell's label."""

MEASURED: tuple[str, ...] = ("ok", "check_failed")
"""Statuses whose numbers were measured (check_failed: measured, but not what was asked)."""

PHASES: tuple[str, ...] = ("setup", "load", "prefill", "decode", "generate")
"""Where a cell can fail: setup (imports, pre-flight checks), load, prefill, decode, and
generate (``model.generate``'s own numbers, eager decode_mode cells only)."""


def in_status_order(statuses: Iterable[str]) -> list[str]:
    """The distinct ``statuses`` in the order of :data:`STATUSES`, any others after them by
    name (the order in which summaries and tables list them)."""
    present = set(statuses)
    return [s for s in STATUSES if s in present] + sorted(present - set(STATUSES))


def phase_ran(phase: str, status: str | None, stopped_in: str | None) -> bool:
    """Whether ``phase`` ran to its end in a cell of ``status`` whose JSON says it stopped in
    ``stopped_in``: every phase of a measured cell (``ok``; ``check_failed``, which ran but
    failed a truth check), else only the phases before the one it stopped in."""
    if status in MEASURED:
        return True
    return (
        phase in PHASES and stopped_in in PHASES and PHASES.index(phase) < PHASES.index(stopped_in)
    )


def stopped_in(result: Mapping[str, Any]) -> str | None:
    """The phase a cell JSON ``result`` that was not measured (status outside
    :data:`MEASURED`) stopped in, or None: that phase's memory record is what the cell held
    when it failed, not the phase's peak. A ``check_failed`` cell ran every phase."""
    return result.get("phase") if result.get("status") not in MEASURED else None


_OOM_PATTERNS = (
    re.compile(r"out of memory", re.IGNORECASE),
    re.compile(r"can't allocate memory", re.IGNORECASE),
    re.compile(r"CUBLAS_STATUS_ALLOC_FAILED"),
    re.compile(r"CUDNN_STATUS_ALLOC_FAILED|CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"),
    re.compile(r"memory budget exceeded", re.IGNORECASE),
)
_UNSUPPORTED_PATTERNS = (
    re.compile(r"No (available|viable) kernel|No viable backend", re.IGNORECASE),
    re.compile(r"only supports? (torch\.)?(fp16|float16|bf16|bfloat16)", re.IGNORECASE),
    re.compile(r"does not support", re.IGNORECASE),
    re.compile(r"not supported", re.IGNORECASE),
    re.compile(r"(requires|needs) (a )?(CUDA|GPU)", re.IGNORECASE),
    re.compile(r"sm_?\d+ .*not supported|unsupported (gpu|architecture)", re.IGNORECASE),
)
_MISSING_PACKAGE_PATTERNS = (
    re.compile(r"doesn't seem to be installed|is not installed|pip install", re.IGNORECASE),
    re.compile(r"requires the `?[\w-]+`? (library|package)", re.IGNORECASE),
)
_REQUESTED_BYTES = re.compile(
    r"(?:Tried to allocate|tried to allocate)\s+([0-9.]+)\s*(B|bytes|KiB|MiB|GiB|TiB)?",
)
_UNIT_BYTES = {None: 1, "B": 1, "bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


class MemoryBudgetExceeded(MemoryError):
    """The configured artificial memory budget was exceeded (checked, not allocator-enforced)."""


@dataclass(frozen=True)
class Failure:
    """A classified exception: the cell status it maps to and the evidence."""

    status: str
    category: str
    exception_type: str
    message: str
    requested_bytes: int | None
    traceback: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored under ``error`` in a cell result."""
        return {
            "category": self.category,
            "type": self.exception_type,
            "message": self.message,
            "requested_bytes": self.requested_bytes,
            "traceback": self.traceback,
        }


def requested_bytes(message: str) -> int | None:
    """Bytes an allocator said it tried to allocate ("Tried to allocate 2.00 GiB"), if stated."""
    match = _REQUESTED_BYTES.search(message)
    if not match:
        return None
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])


def _is_oom(exc: BaseException, message: str) -> bool:
    name = type(exc).__name__
    if name in {"OutOfMemoryError", "MemoryBudgetExceeded"} or isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(p.search(message) for p in _OOM_PATTERNS)


def _is_missing_package(exc: BaseException, message: str) -> bool:
    if isinstance(exc, ImportError):
        return True
    return any(p.search(message) for p in _MISSING_PACKAGE_PATTERNS)


def _is_unsupported(exc: BaseException, message: str) -> bool:
    if isinstance(exc, NotImplementedError):
        return True
    return isinstance(exc, (RuntimeError, ValueError, TypeError)) and any(
        p.search(message) for p in _UNSUPPORTED_PATTERNS
    )


def classify(exc: BaseException) -> Failure:
    """Map an exception to a status: oom, unavailable (missing package), unsupported, or error.

    Order matters: an allocator failure is out-of-memory even when its message mentions
    other things; a missing package is "unavailable" even when transformers words it as
    "not supported".
    """
    message = str(exc)
    if _is_oom(exc, message):
        status, category = "oom", "out_of_memory"
    elif _is_missing_package(exc, message):
        status, category = "unavailable", "missing_package"
    elif _is_unsupported(exc, message):
        status, category = "unsupported", "unsupported_combination"
    else:
        status, category = "error", "other_error"
    return Failure(
        status=status,
        category=category,
        exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        message=message[:4000],
        requested_bytes=requested_bytes(message) if status == "oom" else None,
        traceback="".join(traceback.format_exception(exc))[-8000:],
    )
