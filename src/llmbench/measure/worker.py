"""The child process of one cell: run its phases in order and record what each measured.

Run as ``python -m llmbench.measure.worker SPEC_JSON``. The phases (``llmbench.measure.phases``)
measure and return typed results; this module alone writes them into the cell record. After
every phase the result so far is written atomically to the spec's ``partial_path``, so that if
this process is killed, times out or crashes, the parent still knows the last phase reached and
what was measured before it. Each step's result is recorded before the next step can fail, so
a failed cell keeps everything measured up to the failure. Exceptions are classified
(failures.py) and end the cell; the process exits 0 whenever it managed to write its result.
Importing this module imports no torch (the warm-start server preloads it before forking).
May import: ``llmbench.grid``, ``llmbench.host``, ``llmbench.record``, ``llmbench.measure``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from llmbench.grid.spec import TORCHAO_QUANTS
from llmbench.grid.support import positions_needed
from llmbench.host import nvml
from llmbench.measure import attention, fp8, kvcache, quantization
from llmbench.measure.allocator import AllocatorTrace, allocator_check
from llmbench.measure.checks import gpu_clean_check
from llmbench.measure.failures import classify
from llmbench.measure.phases import decode, hf_generate, load, prefill, setup, summary
from llmbench.measure.phases.decode import DecodeResult
from llmbench.measure.phases.generation import Generation, prefill_kwargs
from llmbench.measure.phases.load import Loaded, make_inputs
from llmbench.measure.phases.prefill import PrefillResult
from llmbench.measure.phases.setup import Cancelled, Session, resolve_device
from llmbench.measure.phases.spec import CellSpec
from llmbench.measure.roofline import measure_roofline
from llmbench.measure.timing import LatencyStats
from llmbench.record.cell import new_result, read_json, write_json_atomic

__all__ = ["Cancelled", "Generation", "main", "make_inputs", "measure", "resolve_device", "run"]

Record = dict[str, Any]
Save = Callable[[], None]


def measure(spec: CellSpec, result: Record, save: Save) -> None:
    """Fill ``result`` phase by phase; raises on the first failure (the caller classifies).

    ``result["phase"]`` names the phase running, so a failure (or a killed worker's last
    partial JSON) tells which phase it ended in; each phase saves the partial JSON when done.
    """
    session = _set_up(spec, result, save)
    trace = AllocatorTrace(session.torch, spec.cell) if session.device == "cuda" else None
    try:
        _measure_loaded(spec, session, result, save)
    finally:
        if trace is not None:
            result["timing_breakdown"]["allocator_trace"] = trace.dump()


def _measure_loaded(spec: CellSpec, session: Session, result: Record, save: Save) -> None:
    """Load, prefill, decode, generate (eager decode_mode and a model-dtype KV cache, with
    ``measurement.generate``); a quantized KV cache adds its stored bytes (``kv_cache``) and
    its check (``checks.kv_cache``)."""
    result["phase"] = "load"
    save()  # start-up is over: the parent's cell time limit counts from here (run.runner)
    loaded = _load(spec, session, result, save)
    generated = None
    with session.torch.inference_mode(), attention.sdpa_context(spec.cell.sdpa_backend):
        result["phase"] = "prefill"
        prefilled = _prefill(spec, session, loaded, result, save)
        result["phase"] = "decode"
        decoded = _decode(spec, session, loaded, result)
        if decoded.truth is not None:
            result["checks"]["decode_truth"] = decoded.truth
        if decoded.kv_cache is not None:
            result["checks"]["kv_cache"] = decoded.kv_cache["check"]
            result["kv_cache"] = {"format": spec.cell.kv_cache, **decoded.kv_cache["stored_bytes"]}
        # generate builds its own DynamicCache: a quantized-cache cell has no generate run
        if (
            spec.cell.decode_mode == "eager"
            and spec.cell.kv_cache == "model"
            and spec.measurement.get("generate")
        ):
            result["memory"] = session.tracker.to_dict()  # decode's, kept if generate fails
            save()
            result["phase"] = "generate"
            generated = hf_generate.measure_generate(loaded, spec.cell, spec.measurement, session)
    result["memory"] = session.tracker.to_dict()  # every phase, the generations gone
    _fp8_matmul(spec, session, loaded, result)
    _summarise(spec, session, loaded, prefilled, decoded, result)
    if generated is not None:
        result["latency"]["generate"] = generated
    result["phase"] = None


def _set_up(spec: CellSpec, result: Record, save: Save) -> Session:
    """Imports, device, pre-flight checks and trackers; Cancelled for a cell known not to run."""
    # Before CUDA is initialised: what other processes hold on every GPU of the host.
    result["gpu_before"] = nvml.host_snapshot()
    torch = setup.import_libraries(spec.cell.quant)
    result["timing_breakdown"]["start_and_imports_s"] = time.time() - spec.spawned_at
    device = setup.resolve_device(spec.settings["device"], torch)
    result["cell"]["device"] = device
    result["environment"].update(setup.prepare_torch(torch, device, spec.settings))
    setup.check_supported(spec.cell, device, torch, spec.settings.get("device_map") or "auto")
    missing = kvcache.check_backend(spec.cell)
    if missing:
        raise Cancelled("unavailable", missing)
    if spec.cell.kv_quantization is not None:  # quanto's JIT build counts as start-up
        started = time.perf_counter()
        unbuilt = kvcache.prepare_backend(spec.cell, device)
        result["timing_breakdown"]["kv_backend_prepare_s"] = time.perf_counter() - started
        if unbuilt:
            raise Cancelled("unavailable", unbuilt)
    gpus = result["environment"]["gpus"]
    if device == "cuda":
        result["checks"]["gpu_clean"] = gpu_clean_check(result["gpu_before"], gpus)
    session = setup.open_session(torch, device, gpus, spec.settings.get("memory_budget_gib"))
    result["memory"] = session.tracker.to_dict()
    save()
    return session


def _load(spec: CellSpec, session: Session, result: Record, save: Save) -> Loaded:
    """The plan, the tracked load, then what the model holds and the prompt it will get."""
    plan = load.plan_load(spec, session.device)
    result["model"] = plan.describe()
    model, load_seconds = load.load_model(plan, session.tracker)
    result["memory"] = session.tracker.to_dict()
    result["timing_breakdown"]["load_s"] = load_seconds
    measure_started = time.perf_counter()
    facts = load.inspect_model(model)
    result["model"].update(facts.describe())
    needed = positions_needed(spec.cell, spec.measurement["decode_tokens"])
    overflow = load.position_overflow(model, needed)
    if overflow is not None:
        raise Cancelled("unsupported", overflow)
    checks = result["checks"]
    if spec.cell.quant in TORCHAO_QUANTS:  # the matmul is added after decode (_fp8_matmul)
        checks["quantization"] = fp8.check_fp8(spec.cell.quant, fp8.inspect_fp8(model), None)
    else:
        checks["quantization"] = quantization.check_quantization(
            spec.cell.quant,
            facts.inspection,
            compute_dtype=spec.cell.compute_dtype_4bit(spec.settings["bnb_4bit_compute_dtype"]),
            int8_threshold=spec.cell.llm_int8_threshold,
        )
    checks["attention"] = load.attention_check(spec.cell, facts.attn_in_config)
    if session.device == "cuda":
        checks["allocator"] = allocator_check(session.torch, spec.cell)
    save()
    input_ids = load.make_prompt(model, spec, facts.shape.vocab_size, session.torch)
    new_cache = kvcache.cache_factory(model, spec.cell)
    return Loaded(model, input_ids, facts, measure_started, new_cache)


def _fp8_matmul(spec: CellSpec, session: Session, loaded: Loaded, result: Record) -> None:
    """An fp8 cell on CUDA: profile one 8-token forward, after every measured phase so that
    it changes none of them, and re-check the quantization with the matmul that ran."""
    if spec.cell.quant not in TORCHAO_QUANTS or session.device != "cuda":
        return
    kernels = fp8.profile_matmul(loaded.model, loaded.input_ids, session.torch)
    result["checks"]["quantization"] = fp8.check_fp8(
        spec.cell.quant, result["checks"]["quantization"]["fp8"], kernels
    )


def _prefill(
    spec: CellSpec, session: Session, loaded: Loaded, result: Record, save: Save
) -> PrefillResult:
    """Memory pass, then timed passes; each recorded and saved as soon as it is done."""
    first = prefill.memory_pass(loaded, spec.cell, session.tracker)
    result["memory"] = session.tracker.to_dict()
    attention_check = result["checks"]["attention"]
    expected_calls = loaded.facts.shape.num_layers
    attention_check.update(first.evidence(expected_calls, attention_check["passed"]))
    save()
    stats = prefill.time_prefill(loaded, spec.measurement, session)
    result["latency"] = prefill.latency_record(
        stats, first.logits_dtype, spec.cell, session.stopwatch
    )
    save()
    return PrefillResult(first, stats)


def _decode(spec: CellSpec, session: Session, loaded: Loaded, result: Record) -> DecodeResult:
    """Warm-up (recording the decode SDPA choice the moment it is known), then timed steps."""
    keep_last = prefill_kwargs(loaded.model)

    def record_decode_choice(chosen: dict[str, str]) -> None:
        result["checks"]["attention"]["sdpa_backend_chosen"].update(chosen)

    uses_sdpa = spec.cell.attn_implementation == "sdpa"
    warmup_tokens = spec.measurement["decode_warmup_tokens"]
    decode.warm_up(
        loaded, keep_last, warmup_tokens, uses_sdpa, record_decode_choice, spec.cell.decode_mode
    )
    return decode.time_decode(loaded, keep_last, spec.measurement, spec.cell, session)


def _summarise(
    spec: CellSpec,
    session: Session,
    loaded: Loaded,
    prefilled: PrefillResult,
    decoded: DecodeResult,
    result: Record,
) -> None:
    """Decode latency, energy, the device's roofline, efficiency and the verdict, in that
    order (the roofline after the memory record: it allocates)."""
    stats = LatencyStats.from_samples(decoded.step_ms)
    roofline = _roofline(session)
    result["environment"]["measured_roofline"] = roofline
    result["latency"].update(decode.latency_record(decoded, stats, spec.cell, spec.measurement))
    result["energy"] = summary.energy_summary(
        session.energy.to_dict(), spec.cell, spec.measurement, decoded.steps
    )
    result["efficiency"] = summary.efficiency_record(
        loaded.facts,
        spec.cell,
        spec.settings,
        spec.measurement,
        prefilled.latency,
        stats,
        decoded.kv_dtype,
        session,
        roofline if roofline and "error" not in roofline else None,
    )
    result["timing_breakdown"]["measure_s"] = time.perf_counter() - loaded.measure_started
    status, reason = summary.verdict(result["checks"])
    result["status"] = status
    if reason is not None:
        result["reason"] = reason


def _roofline(session: Session) -> dict[str, Any] | None:
    """The first device's measured copy bandwidth and bf16 matmul rate (None on the CPU;
    ``{"error": ...}`` when it could not be measured, e.g. too little memory left)."""
    if session.device != "cuda":
        return None
    try:
        return measure_roofline(session.torch).to_dict()
    except Exception as exc:  # noqa: BLE001 - the cell's own numbers stand without it
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one cell; always returns a finished result (never raises)."""
    result = new_result(spec["cell"], spec["settings"])
    partial_path = spec["partial_path"]

    def save() -> None:
        write_json_atomic(partial_path, result)

    save()
    try:
        measure(CellSpec.from_json(spec), result, save)
    except Cancelled as cancelled:
        result["status"] = cancelled.status
        result["reason"] = cancelled.reason
    except BaseException as exc:  # noqa: BLE001 - every failure becomes data
        failure = classify(exc)
        result["status"] = failure.status
        result["error"] = failure.to_dict()
        first_line = failure.message.splitlines()[0][:300] if failure.message else ""
        result["reason"] = (
            f"{failure.category} in {result['phase']}: {first_line or failure.exception_type}"
        )
    save()
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m llmbench.measure.worker SPEC_JSON``."""
    argv = sys.argv[1:] if argv is None else argv
    spec = read_json(argv[0])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
