"""The several-GPU report of ``llmbench predict --gpus N``: one row per device of every cell
of a grid on N GPUs of ``--gpu`` or ``--gpu-mem`` (read by ``llmbench.host.devicesize``: each
GPU gets PyTorch's total of it; GiB = 2^30 bytes), with the number of such GPUs each cell needs
(``multigpu.gpus_needed``), as CSV or as a fixed-width table for a person.

Imports ``llmbench.grid`` (grids), ``llmbench.host.devicesize`` and ``llmbench.predict``
(architecture, constants, method, multigpu, output's closing count, refusals: the cells that
cannot run); yaml lazily.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.host.devicesize import read_device
from llmbench.predict.architecture import model_config_for
from llmbench.predict.constants import DECODE_TOKENS, gib
from llmbench.predict.method import Unpredictable
from llmbench.predict.multigpu import (
    MAX_GPUS,
    MultiGpuPrediction,
    gpus_needed,
    predict_devices,
    resolve_policy,
)
from llmbench.predict.output import format_summary
from llmbench.predict.refusals import cannot_run

_CELL_KEYS = (
    "model",
    "quant",
    "attn",
    "dtype",
    "batch",
    "seq",
    "decode_mode",
    "kv_cache",
    "device_map",
    "max_memory",
)


def device_rows(
    cell: Cell,
    answer: MultiGpuPrediction | Unpredictable,
    needed: MultiGpuPrediction | Unpredictable | None,
    policy: str,
) -> list[dict[str, Any]]:
    """Rows of one cell: one per device (GiB), or one with ``fits`` ``unknown`` /
    ``unsupported`` / ``no`` (offloaded) and a ``reason``; ``gpus_needed`` on each."""
    base: dict[str, Any] = {k: v for k, v in asdict(cell).items() if k in _CELL_KEYS}
    base["policy"] = policy
    if isinstance(needed, MultiGpuPrediction):
        base["gpus_needed"] = needed.gpus
    elif needed is None:
        base["gpus_needed"] = "none"
    if isinstance(answer, Unpredictable):
        return [{**base, "fits": "unknown", "reason": answer.reason}]
    if answer.offloaded:
        off = answer.offloaded
        where = off[0] if len(off) == 1 else f"{len(off)} modules ({off[0]} ... {off[-1]})"
        reason = f"the planner puts {where} off the {answer.gpus} GPU(s) (cpu/disk offload)"
        return [{**base, "fits": "no", "reason": reason}]
    return [
        {
            **base,
            "device": d.device,
            "weights_gib": gib(d.weights),
            "load_allocated_gib": gib(d.load),
            "prefill_peak_allocated_gib": gib(d.prefill),
            "decode_peak_allocated_gib": gib(d.decode),
            "need_gib": gib(d.need),
            "fits": d.fits,
            "modules": " ".join(d.modules),
        }
        for d in answer.devices
    ]


def grid_device_rows(
    grid: str | None,
    *,
    repo_root: Path,
    gpus: int,
    gpu_mem: str,
    policy: str | None = None,
    max_gpus: int = MAX_GPUS,
) -> list[dict[str, Any]]:
    """Rows of every cell of a grid (default: the config's) on ``gpus`` GPUs of ``gpu_mem`` (a
    GPU name or nvidia-smi's total; each GPU gets PyTorch's total of it), planned with
    ``policy`` (default: each cell's device_map, ``auto`` at ``config``), and
    the GPUs of ``gpu_mem`` each cell needs (up to ``max_gpus``). Raises ValueError for an
    unknown grid or an unreadable ``gpu_mem``."""
    import yaml

    from llmbench.grid.spec import expand_grid, load_grid

    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    grid = grid or str(config["grid"])
    models = config["models"]
    device = read_device(gpu_mem)
    capacity = device.torch_total
    on = {"gpu": device.label, "gpu_mem_gib": gib(capacity)}  # every row (csv: the device)
    decode_tokens = int((config.get("measurement") or {}).get("decode_tokens", DECODE_TOKENS))
    rows: list[dict[str, Any]] = []
    for cell in expand_grid(load_grid(grid, repo_root / "config", models)):
        chosen = resolve_policy(cell, policy)
        try:
            config = model_config_for(cell.model, models, repo_root)
        except (OSError, ValueError):  # unreadable or not JSON: predict_devices says why
            config = None
        reason = cannot_run(cell, "cuda", config, decode_tokens, chosen)
        if reason:
            base = {k: v for k, v in asdict(cell).items() if k in _CELL_KEYS}
            rows.append({**base, "policy": chosen, "fits": "unsupported", "reason": reason, **on})
            continue
        kwargs = {"gpu_mem": capacity, "policy": chosen, "decode_tokens": decode_tokens}
        answer = predict_devices(cell, models, repo_root, gpus=gpus, **kwargs)
        needed = gpus_needed(cell, models, repo_root, max_gpus=max_gpus, **kwargs)
        rows.extend({**row, **on} for row in device_rows(cell, answer, needed, chosen))
    return rows


_COLUMNS = (
    ("model", "model", "<"),
    ("quant", "quant", "<"),
    ("attn", "attn", "<"),
    ("dtype", "dtype", "<"),
    ("batch", "b", ">"),
    ("seq", "seq", ">"),
    ("policy", "device_map", "<"),
    ("max_memory", "max_memory", "<"),
    ("device", "device", "<"),
    ("weights_gib", "weights", ">"),
    ("load_allocated_gib", "load", ">"),
    ("prefill_peak_allocated_gib", "prefill", ">"),
    ("decode_peak_allocated_gib", "decode", ">"),
    ("need_gib", "need", ">"),
    ("fits", "fits", "<"),
    ("gpus_needed", "GPUs needed", ">"),
    ("modules", "modules", "<"),
)


def format_devices(rows: list[dict[str, Any]], *, grid: str, gpus: int, gpu_mem: str) -> str:
    """The table for a person: a header with the units and the GPUs as read, one line per
    device (numbers in GiB, 2 decimals), then each row's reason."""
    device = read_device(gpu_mem)
    label = device.label
    header = (
        f"grid {grid}: predicted peak allocated per device (GiB = 2^30 bytes) on {gpus} x "
        f"{device.describe()}\n"
        "need = peak + allocator slack + CUDA context, against PyTorch's total; "
        f"GPUs needed: the fewest GPUs of {label} on which every device fits"
    )

    def text(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    table = [[text(row.get(key)) for key, _, _ in _COLUMNS] for row in rows]
    widths = [
        max([len(title), *(len(line[i]) for line in table)])
        for i, (_, title, _) in enumerate(_COLUMNS)
    ]
    lines = [
        "  ".join(
            f"{title:{align}{w}}" for (_, title, align), w in zip(_COLUMNS, widths, strict=True)
        )
    ]
    for line in table:
        cells = zip(line, _COLUMNS, widths, strict=True)
        lines.append("  ".join(f"{v:{align}{w}}" for v, (_, _, align), w in cells).rstrip())
    reasons = [f"{_where(r)}: {r['reason']}" for r in rows if r.get("reason")]
    parts = (header, "\n".join(lines), "\n".join(reasons), format_devices_summary(rows))
    return "\n\n".join(part for part in parts if part)


_WORST_FIRST = ("unsupported", "unknown", "no", "maybe", "yes")
"""A cell's verdict on N GPUs is its worst device's: one device that does not fit is enough."""


def format_devices_summary(rows: list[dict[str, Any]]) -> str:
    """The closing line of ``--gpus N``, as the one-device report's (``output.format_summary``)
    counted per cell, each cell the verdict of its worst device, then how many GPUs the cells
    need: ``9 cells: 5 fit, 4 unknown; GPUs needed: 1 for 5 cells``."""
    cells: dict[tuple[Any, ...], set[str]] = {}
    needed: dict[tuple[Any, ...], Any] = {}
    gpu = next((row["gpu"] for row in rows if row.get("gpu")), None)
    for row in rows:
        key = tuple(row.get(k) for k in (*_CELL_KEYS, "policy"))
        cells.setdefault(key, set()).add(row.get("fits") or "unknown")
        if row.get("gpus_needed") is not None:
            needed[key] = row["gpus_needed"]
    worst = [
        {"fits": next(v for v in _WORST_FIRST if v in fits), "gpu": gpu} for fits in cells.values()
    ]
    counts = Counter(str(n) for n in needed.values())
    ordered = sorted(counts, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0))
    spelled = [f"{n} for {counts[n]} cell{'s' if counts[n] > 1 else ''}" for n in ordered]
    return format_summary(worst) + (f"; GPUs needed: {', '.join(spelled)}" if spelled else "")


def _where(row: dict[str, Any]) -> str:
    return "/".join(str(row[k]) for k in ("model", "quant", "attn", "dtype")) + (
        f"/b{row['batch']}_s{row['seq']}"
    )
