"""After decode: energy per pass and per token, efficiency (MFU/MBU), and the check verdict.

Owns: ``energy_summary``, ``compute_dtype``, ``efficiency_record`` and ``verdict``; all pure
functions of what the phases measured.
May import: ``llmbench.grid``, ``llmbench.measure.efficiency`` and
``llmbench.measure.phases`` (decode, load, setup).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure import efficiency
from llmbench.measure.phases.load import ModelFacts
from llmbench.measure.phases.setup import Session
from llmbench.measure.timing import LatencyStats


def energy_summary(
    raw: dict[str, Any], cell: Cell, measurement: Mapping[str, Any], decode_steps: int
) -> dict[str, Any] | None:
    """The energy meter's record (J) plus J per prefill pass and per token; None without a
    counter (on the CPU) or without measured regions."""
    regions = raw["regions"]
    if not regions or raw["source"] is None:
        return None
    prefill = regions["prefill"]["joules"]
    decode = regions["decode"]["joules"]
    repeats = measurement["repeats"]
    return {
        **raw,
        "prefill_j_per_pass": None if prefill is None else prefill / repeats,
        "prefill_j_per_token": None
        if prefill is None
        else prefill / repeats / (cell.batch * cell.seq),
        "decode_j_per_token": None if decode is None else decode / (cell.batch * decode_steps),
    }


def compute_dtype(cell: Cell, bnb_compute_dtype: str) -> str:
    """The dtype the matrix products run in: 4-bit layers compute in the cell's 4-bit compute
    dtype (its ``bnb_compute``, or ``bnb_compute_dtype`` from the config), others in the
    cell's dtype."""
    return cell.compute_dtype_4bit(bnb_compute_dtype) or cell.dtype


def efficiency_record(
    facts: ModelFacts,
    cell: Cell,
    settings: Mapping[str, Any],
    measurement: Mapping[str, Any],
    prefill: LatencyStats,
    decode: LatencyStats,
    kv_dtype: str,
    session: Session,
    measured: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """MFU of the median prefill and MBU of the median decode step (``efficiency``'s record).

    Decode reads every weight byte once per step; the input embedding table is not read
    unless it is tied to lm_head. A mixture-of-experts step reads only the experts its
    ``batch`` tokens are routed to: assumed uniform routing, each token picking
    ``k`` of ``E`` experts, an expert is read with probability ``1 - (1 - k/E)^batch``
    (the assumption is written into the record's conventions). ``measured`` is the cell's
    ``Roofline`` record, if any.
    """
    weight_bytes, assumption = decode_weight_bytes(
        facts.inspection, facts.shape.tie_word_embeddings, facts.experts, cell.batch
    )
    gpus = session.gpus
    return efficiency.efficiency(
        facts.shape,
        batch=cell.batch,
        seq=cell.seq,
        compute_dtype=compute_dtype(cell, settings["bnb_4bit_compute_dtype"]),
        kv_dtype=kv_dtype if kv_dtype in efficiency.DTYPE_BYTES else cell.dtype,
        weight_bytes_read_per_step=weight_bytes,
        prefill_ms=prefill.p50,
        decode_ms_per_step=decode.p50,
        decode_tokens=measurement["decode_tokens"],
        device_name=gpus[0]["name"] if gpus else None,
        n_devices=session.n_devices,
        measured=measured,
        assumption=assumption,
    ).to_dict()


def decode_weight_bytes(
    weights: Mapping[str, Any],
    tied: bool,
    experts: tuple[int, int, int] | None,
    batch: int,
) -> tuple[int, str | None]:
    """Weight bytes one decode step reads, and the assumption it took (None for a dense model).

    ``weights``: the load phase's inspection (``weight_bytes_total``, ``embedding_bytes``);
    the input embedding table is not read unless ``tied`` to lm_head. ``experts``:
    ``(E, k, bytes of the routed expert weights)`` of a mixture of experts: under uniform
    routing, each of ``batch`` tokens picking ``k`` of ``E``, an expert is read with
    probability ``1 - (1 - k/E)^batch``."""
    weight_bytes = weights["weight_bytes_total"]
    if not tied:
        weight_bytes -= weights["embedding_bytes"]
    if experts is None:
        return weight_bytes, None
    count, top_k, expert_bytes = experts
    read = 1.0 - (1.0 - top_k / count) ** batch
    assumption = (
        f"mixture of experts: uniform routing assumed, {top_k} of {count} experts per "
        f"token, each expert's weights read with probability {read:.4f} per step"
    )
    return weight_bytes - round(expert_bytes * (1.0 - read)), assumption


def verdict(checks: Mapping[str, Mapping[str, Any]]) -> tuple[str, str | None]:
    """(status, reason) of a measured cell: ``ok``, or ``check_failed`` naming every failed
    check with its reason. A GPU that was not clean is recorded, never failed."""
    failed = [name for name, check in checks.items() if name != "gpu_clean" and not check["passed"]]
    if not failed:
        return "ok", None
    reason = "; ".join(f"{name}: {checks[name].get('reason', 'failed')}" for name in failed)
    return "check_failed", reason
