"""The child process of one cell: load the model, measure each phase, record everything.

Run as ``python -m llmbench.measure.worker SPEC_JSON``. After every phase the result so far is
written atomically to the spec's ``partial_path``, so that if this process is killed, times
out or crashes, the parent still knows the last phase reached and what was measured before it.
Exceptions are classified (failures.py) and end the cell; the process exits 0 whenever it
managed to write its result.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.host import environment, nvml
from llmbench.measure.checks import gpu_clean_check
from llmbench.measure.failures import classify
from llmbench.record.cell import new_result, read_json, write_json_atomic


def resolve_device(requested: str, torch: Any) -> str:
    """The device a cell runs on: cuda, cpu, or for ``auto`` cuda when one is visible."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested, but this node has no usable CUDA GPU")
    return requested


def make_inputs(kind: str, batch: int, seq: int, vocab_size: int, seed: int, torch: Any) -> Any:
    """Prompt token ids of shape (batch, seq): random (default) or zeros (the seed's input)."""
    if kind == "zeros":
        return torch.zeros(batch, seq, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq), generator=generator, dtype=torch.long)


class Cancelled(Exception):
    """Raised to end a cell early with a chosen status (used for pre-flight decisions)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Generation:
    """Greedy generation through the KV cache, one token per step, as ``generate`` does it.

    The prefill keeps only the last position's logits when the model allows it
    (``logits_to_keep=1``, as ``generate`` does), so time to first token is not inflated by
    full-sequence logits.
    """

    def __init__(self, model: Any, input_ids: Any, prefill_kwargs: dict[str, Any]) -> None:
        self.model = model
        self.input_ids = input_ids
        self.prefill_kwargs = prefill_kwargs
        self.cache: Any = None
        self.token: Any = None

    def _advance(self, outputs: Any) -> None:
        self.cache = outputs.past_key_values
        self.token = outputs.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    def prefill(self) -> None:
        """Run the prompt, fill the cache, pick the first new token."""
        self._advance(self.model(input_ids=self.input_ids, use_cache=True, **self.prefill_kwargs))

    def step(self) -> None:
        """Decode one token per sequence from the cache."""
        self._advance(self.model(input_ids=self.token, past_key_values=self.cache, use_cache=True))

    def kv_dtype(self) -> str | None:
        """dtype of the cached keys, when the cache exposes its layers."""
        layers = getattr(self.cache, "layers", None)
        keys = getattr(layers[0], "keys", None) if layers else None
        return None if keys is None else str(keys.dtype).removeprefix("torch.")


def measure(spec: dict[str, Any], result: dict[str, Any], save: Any) -> None:
    """Fill ``result`` phase by phase; raises on the first failure (the caller classifies)."""
    spawned_at = float(spec.get("spawned_at") or time.time())
    settings = spec["settings"]
    measurement = settings["measurement"]
    cell = Cell.from_mapping(spec["cell"])

    # Before CUDA is initialised: what other processes hold on every GPU of the host.
    result["gpu_before"] = nvml.host_snapshot()
    import torch
    from transformers import AutoModelForCausalLM  # noqa: F401 - its import counts as start-up

    if cell.quant in ("int8", "nf4", "nf4-dq"):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            pass  # classified when from_pretrained asks for it

    from llmbench.grid.support import static_unsupported
    from llmbench.measure import attention, efficiency, models, quantization
    from llmbench.measure.energy import EnergyMeter
    from llmbench.measure.memory import MemoryTracker
    from llmbench.measure.timing import LatencyStats, Stopwatch

    result["timing_breakdown"]["start_and_imports_s"] = time.time() - spawned_at
    device = resolve_device(settings["device"], torch)
    result["cell"]["device"] = device
    if device == "cpu" and settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    result["environment"].update(environment.capture_torch())
    reason = static_unsupported(cell, device)
    if reason:
        raise Cancelled("unsupported", reason)
    gpus = result["environment"]["gpus"]
    if device == "cuda":
        result["checks"]["gpu_clean"] = gpu_clean_check(result["gpu_before"], gpus)
    n_devices = len(gpus) if device == "cuda" else 0
    tracker = MemoryTracker(device, settings.get("memory_budget_gib"))
    stopwatch = Stopwatch(device, max(n_devices, 1))
    energy = EnergyMeter.for_cuda_devices(n_devices)
    result["memory"] = tracker.to_dict()
    save()

    # ---- load -------------------------------------------------------------------------
    result["phase"] = "load"
    compute_dtype = settings["bnb_4bit_compute_dtype"]
    checkpoint, kind = models.choose_checkpoint(
        spec["model_entry"],
        None if spec.get("base_dir") is None else Path(spec["base_dir"]),
        None if spec.get("prequantized_dir") is None else Path(spec["prequantized_dir"]),
        quant=cell.quant,
        compute_dtype=compute_dtype,
    )
    kwargs = models.load_kwargs(
        quant=cell.quant,
        attn_implementation=cell.attn_implementation,
        dtype=cell.dtype,
        device_map=models.resolve_device_map(settings["device_map"], device),
        compute_dtype=compute_dtype,
    )
    result["model"] = {
        "checkpoint": checkpoint,
        "checkpoint_kind": kind,
        "from_pretrained_kwargs": models.describe_kwargs(kwargs),
    }
    tracker.mark_before_load()
    with tracker.phase("load"):
        model, load_seconds = models.load(checkpoint, kwargs)
    result["memory"] = tracker.to_dict()
    result["timing_breakdown"]["load_s"] = load_seconds
    measure_started = time.perf_counter()
    config = model.config.to_dict()
    shape = efficiency.Shape.from_config(config)
    inspection = quantization.inspect_model(model)
    result["model"].update(
        model_type=config.get("model_type"),
        n_parameters=sum(p.numel() for p in model.parameters()),
        dtype_loaded=str(model.dtype).removeprefix("torch."),
        placement=models.placement(model),
        weights=inspection,
    )
    result["checks"]["quantization"] = quantization.check_quantization(cell.quant, inspection)
    attn_in_config = getattr(model.config, "_attn_implementation", None)
    result["checks"]["attention"] = {
        "requested": cell.attn_implementation,
        "config_attn_implementation": attn_in_config,
        "sdpa_backend_forced": cell.sdpa_backend,
        "flash_attn": attention.flash_attn_info(),
        "passed": attn_in_config == cell.attn_implementation,
    }
    save()

    input_device = model.get_input_embeddings().weight.device
    input_ids = make_inputs(
        measurement["input_tokens"],
        cell.batch,
        cell.seq,
        shape.vocab_size,
        measurement["seed"],
        torch,
    ).to(input_device)

    with torch.inference_mode(), attention.sdpa_context(cell.sdpa_backend):
        # ---- prefill: memory pass (the seed's forward), then timed passes ------------------
        result["phase"] = "prefill"
        uses_sdpa = cell.attn_implementation == "sdpa"
        with (
            tracker.phase("prefill"),
            attention.count_attention_calls(model, cell.attn_implementation) as calls,
            attention.record_sdpa_choice(uses_sdpa) as sdpa_chosen,
        ):
            outputs = model(input_ids=input_ids)
            logits_dtype = str(outputs.logits.dtype).removeprefix("torch.")
            del outputs
        result["memory"] = tracker.to_dict()
        result["checks"]["attention"].update(
            calls_in_one_forward=calls["calls"],
            expected_calls=shape.num_layers,
            passed=result["checks"]["attention"]["passed"]
            and calls["calls"] in (-1, shape.num_layers),
            # which SDPA backend PyTorch picked (prefill here, decode in the warmup below)
            sdpa_backend_chosen=sdpa_chosen if uses_sdpa else None,
        )
        save()

        def forward() -> None:
            model(input_ids=input_ids)  # outputs dropped at once: no two passes alive together

        for _ in range(measurement["warmup"]):
            forward()
        prefill_ms = []
        with energy.measure("prefill", stopwatch.synchronize):
            for _ in range(measurement["repeats"]):
                prefill_ms.append(stopwatch.time(forward)[1])
        prefill = LatencyStats.from_samples(prefill_ms)
        result["latency"] = {
            "timer": stopwatch.method,
            "prefill": prefill.to_dict(),
            "prefill_tokens_per_s": cell.batch * cell.seq / (prefill.p50 / 1000.0),
            "logits_dtype": logits_dtype,
        }
        save()

        # ---- decode through the KV cache ----------------------------------------------------
        result["phase"] = "decode"
        keep_last = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
        if measurement["decode_warmup_tokens"]:
            warm = Generation(model, input_ids, keep_last)
            warm.prefill()
            with attention.record_sdpa_choice(uses_sdpa) as decode_chosen:
                warm.step()  # untimed: the decode choice is recorded here, not in timed steps
            if uses_sdpa:
                result["checks"]["attention"]["sdpa_backend_chosen"].update(decode_chosen)
            for _ in range(measurement["decode_warmup_tokens"] - 1):
                warm.step()
            del warm
        generation = Generation(model, input_ids, keep_last)
        ttft_ms = stopwatch.time(generation.prefill)[1]
        step_ms = []
        with tracker.phase("decode"), energy.measure("decode", stopwatch.synchronize):
            for _ in range(measurement["decode_tokens"] - 1):
                step_ms.append(stopwatch.time(generation.step)[1])
        kv_dtype = generation.kv_dtype() or cell.dtype
        del generation
    result["memory"] = tracker.to_dict()
    decode = LatencyStats.from_samples(step_ms)
    steps = len(step_ms)
    result["latency"].update(
        ttft_ms=ttft_ms,
        decode_per_token=decode.to_dict(),
        decode_tokens=measurement["decode_tokens"],
        decode_tokens_per_s=cell.batch * steps / (sum(step_ms) / 1000.0),
        kv_cache_dtype=kv_dtype,
    )
    result["energy"] = _energy_summary(energy.to_dict(), cell, measurement, steps)
    weight_bytes = inspection["weight_bytes_total"]
    if not shape.tie_word_embeddings:
        weight_bytes -= inspection["embedding_bytes"]
    result["efficiency"] = efficiency.efficiency(
        shape,
        batch=cell.batch,
        seq=cell.seq,
        compute_dtype=_compute_dtype(cell, compute_dtype),
        kv_dtype=kv_dtype if kv_dtype in efficiency.DTYPE_BYTES else cell.dtype,
        weight_bytes_read_per_step=weight_bytes,
        prefill_ms=prefill.p50,
        decode_ms_per_step=decode.p50,
        decode_tokens=measurement["decode_tokens"],
        device_name=gpus[0]["name"] if gpus else None,
        n_devices=n_devices,
    ).to_dict()
    result["timing_breakdown"]["measure_s"] = time.perf_counter() - measure_started
    failed = [
        name
        for name, check in result["checks"].items()
        if name != "gpu_clean" and not check["passed"]
    ]
    if failed:
        result["status"] = "check_failed"
        result["reason"] = "; ".join(
            f"{name}: {result['checks'][name].get('reason', 'failed')}" for name in failed
        )
    else:
        result["status"] = "ok"
    result["phase"] = None


def _accepts(model: Any, argument: str) -> bool:
    import inspect

    return argument in inspect.signature(model.forward).parameters


def _compute_dtype(cell: Cell, bnb_compute_dtype: str) -> str:
    """The dtype the matrix products run in (4-bit layers compute in their compute dtype)."""
    return bnb_compute_dtype if cell.quant in {"nf4", "nf4-dq"} else cell.dtype


def _energy_summary(
    raw: dict[str, Any], cell: Cell, measurement: dict[str, Any], decode_steps: int
) -> dict[str, Any] | None:
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


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one cell; always returns a finished result (never raises)."""
    result = new_result(spec["cell"], spec["settings"])
    partial_path = spec["partial_path"]

    def save() -> None:
        write_json_atomic(partial_path, result)

    save()
    try:
        measure(spec, result, save)
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
