"""What a device size on the command line means, the same for every ``llmbench predict`` mode
(the one-device table, ``--gpus N``, ``--frontier``): a GPU measured here, by name
(:data:`GPUS`), or the total memory nvidia-smi (NVML) reports for a card, read by
:func:`parse_bytes`; and PyTorch's total of that device (:attr:`DeviceSize.torch_total`),
which is NVML's less the memory the driver keeps and never reports to torch
(:data:`NVML_UNREPORTED_BYTES`, measured per GPU model).

Bytes throughout; GiB = 2^30 bytes, MiB = 2^20 bytes (nvidia-smi's "MiB"). May import nothing
of llmbench but its constants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmbench import GIB, MIB

GPUS: dict[str, int] = {
    "h100-80gb": 85_520_809_984,
    "h200": 150_754_820_096,
}
"""NVML total memory (bytes) of the GPUs committed records were measured on:
``gpu_before.<uuid>.total_bytes`` of the H100 80GB HBM3 probes in
``results/reference/h100/frontier`` and of the H200 probes in ``results/reference/h200/``
(nvidia-smi prints 81559MiB and 143771MiB)."""

DEFAULT_GPU = "h100-80gb"
"""The device ``predict`` fits cells into when not told."""

NVML_UNREPORTED_BYTES: dict[int, int] = {
    GPUS["h100-80gb"]: 503_316_480,  # 480 MiB: every committed H100 probe
    GPUS["h200"]: 644_939_776,  # 615.06 MiB: every committed H200 probe, 2026-12-04
}
"""NVML's total - torch's ``total_memory`` of one device, by NVML total: memory the driver
keeps that torch never reports (driver 580.159.04; ``gpu_before.total_bytes -
environment.gpus[0].total_memory_bytes`` in each committed probe). It differs by GPU model:
the H200's 644,939,776 is not the H100's 503,316,480."""

NVML_UNREPORTED_DEFAULT_BYTES = max(NVML_UNREPORTED_BYTES.values())
"""Assumed for a GPU not in :data:`NVML_UNREPORTED_BYTES`: the largest measured, so that the
capacity errs small (a cell called a fit on an unmeasured card should fit; a frontier
predicted a step low costs its search one probe more)."""


def nvml_unreported_bytes(nvml_total: int) -> tuple[int, bool]:
    """(:data:`NVML_UNREPORTED_BYTES` of a device of NVML total ``nvml_total``, whether it was
    measured on that GPU model) or (:data:`NVML_UNREPORTED_DEFAULT_BYTES`, False)."""
    if nvml_total in NVML_UNREPORTED_BYTES:
        return NVML_UNREPORTED_BYTES[nvml_total], True
    return NVML_UNREPORTED_DEFAULT_BYTES, False


def torch_total(nvml_total: int) -> int:
    """PyTorch's total (``torch.cuda.mem_get_info()[1]``) of a device of NVML total
    ``nvml_total``: that less :func:`nvml_unreported_bytes`, never below 0."""
    return max(nvml_total - nvml_unreported_bytes(nvml_total)[0], 0)


_UNITS = {
    "": GIB,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": MIB,
    "gib": GIB,
    "tib": 2**40,
}

_SIZE = re.compile(
    r"\s*((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", re.ASCII
)
"""One number (ASCII digits, an optional exponent) and a unit, spaces only around them."""


def parse_bytes(text: str) -> int:
    """``80GiB``, ``79.18 GiB``, ``85GB``, ``81920MiB`` or a bare number of GiB -> bytes.

    Units: b, kb/mb/gb/tb (10^3k), kib/mib/gib/tib (2^10k), in any case; ASCII digits, one
    number, spaces only around it. Raises ValueError for anything else, and for a size that
    is not at least one byte or not finite."""
    match = _SIZE.fullmatch(text.lower())
    value = float(match.group(1)) if match and match.group(2) in _UNITS else float("nan")
    nbytes = value * _UNITS[match.group(2)] if value == value else value
    if not 1 <= nbytes < float("inf"):
        raise ValueError(
            f"cannot read a memory size from {text!r} (a positive size, e.g. 80GiB, 24GB, "
            "81920MiB; a bare number is GiB)"
        )
    return int(nbytes)


@dataclass(frozen=True)
class DeviceSize:
    """One device as the user named it: ``given`` (a GPU name or a size, as typed) and its
    NVML total in bytes (``nvml_total``)."""

    given: str
    nvml_total: int

    @property
    def name(self) -> str | None:
        """The GPU of :data:`GPUS` with this NVML total, or None."""
        return next((name for name, total in GPUS.items() if total == self.nvml_total), None)

    @property
    def label(self) -> str:
        """:attr:`name`, else the size as given (``24GB``)."""
        return self.name or self.given.strip()

    @property
    def unreported_bytes(self) -> int:
        """What the driver keeps from torch: measured on this GPU model, else assumed."""
        return nvml_unreported_bytes(self.nvml_total)[0]

    @property
    def unreported_measured(self) -> bool:
        """Whether :attr:`unreported_bytes` was measured on this GPU model."""
        return nvml_unreported_bytes(self.nvml_total)[1]

    @property
    def torch_total(self) -> int:
        """PyTorch's total of the device (:func:`torch_total`)."""
        return torch_total(self.nvml_total)

    @property
    def unusable(self) -> str | None:
        """Why the device holds nothing for PyTorch (:attr:`torch_total` 0: the size given is
        not more than the driver keeps), or None."""
        if self.torch_total > 0:
            return None
        kept = self.unreported_bytes // MIB
        return f"nothing is left for PyTorch once the driver keeps its {kept} MiB"

    def describe(self) -> str:
        """One line for a report header, e.g. ``h100-80gb: nvidia-smi 81559 MiB, PyTorch
        79.18 GiB (the driver keeps 480 MiB, measured)``; ``assumed`` where
        :attr:`unreported_measured` is False."""
        source = "measured" if self.unreported_measured else "assumed"
        return (
            f"{self.label}: nvidia-smi {self.nvml_total / MIB:.0f} MiB, PyTorch "
            f"{self.torch_total / GIB:.2f} GiB (the driver keeps "
            f"{self.unreported_bytes / MIB:.0f} MiB, {source})"
        )


def read_device(text: str) -> DeviceSize:
    """A GPU name of :data:`GPUS` (any case) or the device's total as nvidia-smi reports it,
    read by :func:`parse_bytes` (``81559MiB``, ``24GB``). Raises ValueError for anything else,
    naming the GPUs known."""
    key = text.strip().lower()
    if key in GPUS:
        return DeviceSize(key, GPUS[key])
    try:
        return DeviceSize(text, parse_bytes(text))
    except ValueError as exc:
        raise ValueError(f"{exc}; or a GPU measured here: {', '.join(sorted(GPUS))}") from None


def torch_total_of(nvml_or_torch: int) -> str | None:
    """The GPU of :data:`GPUS` whose PyTorch total is ``nvml_or_torch`` bytes to 0.005 GiB
    (5.12 MiB: a total printed in GiB to 2 decimals, as torch's OOM message and ``predict``
    print it, or in MiB): a size someone copied from torch, not from nvidia-smi (the CLI
    notes it); else None."""
    for name, total in GPUS.items():
        if abs(nvml_or_torch - torch_total(total)) <= GIB // 200:
            return name
    return None


__all__ = [
    "DEFAULT_GPU",
    "GPUS",
    "NVML_UNREPORTED_BYTES",
    "NVML_UNREPORTED_DEFAULT_BYTES",
    "DeviceSize",
    "nvml_unreported_bytes",
    "parse_bytes",
    "read_device",
    "torch_total",
    "torch_total_of",
]
