"""Failure classification, on exceptions raised by the real code paths where the CPU allows."""

import importlib

import pytest
import torch

from llmbench.measure import failures
from llmbench.measure.failures import Failure, MemoryBudgetExceeded, classify, requested_bytes

H100_OOM = (
    "CUDA out of memory. Tried to allocate 32.00 GiB. GPU 0 has a total capacity of 79.18 GiB "
    "of which 14.69 GiB is free. Including non-PyTorch memory, this process has 64.48 GiB "
    "memory in use."
)


def raised(function) -> BaseException:
    try:
        function()
    except BaseException as exc:  # noqa: BLE001 - the point is to catch anything
        return exc
    raise AssertionError("expected an exception")


def test_cuda_oom_at_the_allocator_boundary_is_oom_with_requested_bytes():
    # torch.OutOfMemoryError is what the CUDA caching allocator raises; its message is the
    # one a real H100 cell recorded.
    failure = classify(torch.OutOfMemoryError(H100_OOM))
    assert (failure.status, failure.category) == ("oom", "out_of_memory")
    assert failure.requested_bytes == 32 * 2**30
    assert failure.exception_type == "torch.OutOfMemoryError"


def test_real_cpu_allocation_failure_is_oom():
    exc = raised(lambda: torch.empty(2**62, dtype=torch.uint8))
    assert classify(exc).status == "oom"


def test_memory_budget_is_oom():
    assert classify(MemoryBudgetExceeded("memory budget exceeded in prefill")).status == "oom"


def test_missing_package_is_unavailable():
    exc = raised(lambda: importlib.import_module("flash_attn_is_not_installed_here"))
    failure = classify(exc)
    assert (failure.status, failure.category) == ("unavailable", "missing_package")


def test_transformers_refusing_flash_attention_without_the_package_is_unavailable(tmp_path):
    from transformers import AutoModelForCausalLM, MistralConfig

    config = MistralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    exc = raised(
        lambda: AutoModelForCausalLM.from_pretrained(
            tmp_path, attn_implementation="flash_attention_2"
        )
    )
    assert classify(exc).status == "unavailable"


def test_sdpa_backend_that_cannot_run_is_unsupported():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 4, 8)

    def attend():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)

    if torch.cuda.is_available():
        pytest.skip("cuDNN attention may run on this GPU host")
    assert classify(raised(attend)).status == "unsupported"


def test_flash_attention_dtype_refusal_is_unsupported():
    # The message flash-attn raised for the seed's case 3 as written on the H100.
    failure = classify(RuntimeError("FlashAttention only support fp16 and bf16 data type"))
    assert failure.status == "unsupported"


def test_anything_else_is_error_and_keeps_the_message():
    failure = classify(ZeroDivisionError("division by zero"))
    assert isinstance(failure, Failure)
    assert (failure.status, failure.message) == ("error", "division by zero")
    assert "ZeroDivisionError" in failure.traceback or failure.traceback == ""


@pytest.mark.parametrize(
    "message, expected",
    [
        ("Tried to allocate 2.00 MiB", 2 * 2**20),
        ("tried to allocate 512 bytes", 512),
        ("no size", None),
    ],
)
def test_requested_bytes_parsing(message, expected):
    assert requested_bytes(message) == expected


@pytest.mark.parametrize("status", [*failures.STATUSES, "something_new"])
def test_stopped_in_and_phase_ran_agree_for_every_status(status):
    # one rule for "the phase this cell's numbers stop being peaks": the report's empty
    # {phase}_* columns and predict's measured/predicted ratios both use stopped_in
    result = {"status": status, "phase": "prefill"}
    stopped = failures.stopped_in(result)
    assert stopped == (None if status in failures.MEASURED else "prefill")
    for phase in ("load", "prefill", "decode"):
        ran = failures.phase_ran(phase, status, result["phase"])
        assert ran == (stopped is None or failures.PHASES.index(phase) < 2), phase
    assert failures.stopped_in({"status": "check_failed", "phase": "load"}) is None
    assert failures.stopped_in({"status": "oom"}) is None  # no phase recorded
