"""The warm-start server: cells forked from it behave like spawned cells, and fall back to
spawning whenever the server cannot serve them."""

import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import FAKES, REPO, kill_runner_of_hanging_worker, process_gone, run_fake_cell

from llmbench.run import preload, warmstart


def wait_for(predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real server (the real preload list) that can also import the fake workers."""
    socket_path = tmp_path_factory.mktemp("ws") / "warmstart.sock"
    log = tmp_path_factory.mktemp("ws-log") / "server.log"
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(FAKES), str(REPO / "src"), saved.get("PYTHONPATH")) if p
    )
    try:
        process = warmstart.start_server(socket_path, log_path=log)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert wait_for(socket_path.exists, 120), log.read_text()
    yield socket_path
    os.environ[warmstart.SOCKET_VARIABLE] = str(socket_path)  # as start_server left it
    warmstart.stop_server()
    assert process.returncode == 0  # a clean stop on SIGTERM
    assert not socket_path.parent.exists()  # socket and its folder removed
    assert warmstart.SOCKET_VARIABLE not in os.environ


@pytest.fixture
def use_server(server, fake_path, monkeypatch):
    monkeypatch.setenv(warmstart.SOCKET_VARIABLE, str(server))
    return server


def test_startup_only_variables_are_told_apart():
    server_env = {"PATH": "/bin", "OMP_NUM_THREADS": "16", "MALLOC_ARENA_MAX": "2"}
    cell_env = {"PATH": "/usr/bin", "OMP_NUM_THREADS": "4", "LD_PRELOAD": "x.so"}
    # PATH is read later, thread counts are re-applied in the child; the rest needs exec
    assert warmstart.startup_differences(cell_env, server_env) == ["LD_PRELOAD", "MALLOC_ARENA_MAX"]
    assert warmstart.startup_differences(server_env, server_env) == []


def test_forked_cell_finishes_with_the_runners_environment(tmp_path, use_server, monkeypatch):
    monkeypatch.setenv("FAKE_ECHO", "set by the runner after the server started")
    result = run_fake_cell(tmp_path, "finish")
    assert result["status"] == "unsupported"
    assert result["timing_breakdown"]["start_method"] == "fork from warm-start server"
    assert result["reason"] == "set by the runner after the server started"


def test_startup_variable_makes_the_child_exec_a_fresh_interpreter(
    tmp_path, use_server, monkeypatch
):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    result = run_fake_cell(tmp_path, "finish")
    assert result["status"] == "unsupported"
    assert result["settings"]["malloc_mmap_threshold"] == "131072"
    assert result["timing_breakdown"]["start_method"] == (
        "fork+exec from warm-start server (start-up variables differ: MALLOC_MMAP_THRESHOLD_)"
    )


def test_forked_child_that_hangs_times_out_and_its_group_is_killed(tmp_path, use_server):
    started = time.monotonic()
    result = run_fake_cell(tmp_path, "hang", timeout_s=2)
    assert result["status"] == "timeout" and result["phase"] == "prefill"
    assert time.monotonic() - started < 10  # SIGTERM works: the server's handlers are reset
    pid = int(re.search(r"pid=(\d+)", (tmp_path / "cell.log").read_text()).group(1))
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10)


@pytest.mark.parametrize(
    "behaviour, signal_name", [("sigkill", "SIGKILL"), ("segfault", "SIGSEGV")]
)
def test_forked_child_killed_by_a_signal_is_crashed(tmp_path, use_server, behaviour, signal_name):
    result = run_fake_cell(tmp_path, behaviour)
    assert result["status"] == "crashed"
    assert signal_name in result["reason"]
    assert result["timing_breakdown"]["worker_returncode"] == -getattr(signal, signal_name)


def test_forked_child_dies_when_its_runner_is_killed(tmp_path, use_server):
    """The server kills a child whose runner went away (the job was killed)."""
    assert process_gone(kill_runner_of_hanging_worker(tmp_path))


def test_cells_spawn_when_the_server_is_not_there(tmp_path, fake_path, monkeypatch):
    monkeypatch.setenv(warmstart.SOCKET_VARIABLE, str(tmp_path / "absent.sock"))
    result = run_fake_cell(tmp_path, "finish")
    assert result["status"] == "unsupported"
    assert result["timing_breakdown"]["start_method"] == "spawn (warm-start server not ready)"


def test_cells_spawn_when_the_socket_is_dead(tmp_path, fake_path, monkeypatch):
    stale = tmp_path / "stale.sock"
    stale.write_text("")  # a leftover path that accepts no connection
    monkeypatch.setenv(warmstart.SOCKET_VARIABLE, str(stale))
    result = run_fake_cell(tmp_path, "finish")
    assert result["status"] == "unsupported"
    assert result["timing_breakdown"]["start_method"].startswith("spawn (warm-start server at")


def test_server_without_torch_refuses_to_serve(tmp_path):
    assert warmstart.serve(tmp_path / "s.sock", modules=["json"]) == 1
    assert not (tmp_path / "s.sock").exists()
    assert warmstart.refused_path(tmp_path / "s.sock").read_text() == (
        "torch could not be imported\n"
    )


def test_a_refused_server_is_named_in_the_cells_start_method(tmp_path, fake_path, monkeypatch):
    # The server refused (torch missing, or CUDA initialised by its preload): every cell says
    # why it spawned, instead of "not ready", which hid a refusal on the H200 (2026-12-04).
    socket_path = tmp_path / "s.sock"
    assert warmstart.serve(socket_path, modules=["json"]) == 1
    monkeypatch.setenv(warmstart.SOCKET_VARIABLE, str(socket_path))
    result = run_fake_cell(tmp_path, "finish")
    assert result["status"] == "unsupported"
    assert result["timing_breakdown"]["start_method"] == (
        "spawn (warm-start server off: torch could not be imported)"
    )


def test_preload_answers_the_compute_capability_from_nvml(tmp_path, monkeypatch):
    # torchao asks torch.cuda.get_device_capability() at import (is_sm_at_least_100), which
    # initialises CUDA on a GPU host; on this CPU build of torch the real call raises. A module
    # that asks the same at import is preloaded with the answer given in CUDA's place.
    (tmp_path / "asks_capability.py").write_text(
        "import torch\nANSWER = torch.cuda.get_device_capability()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch = pytest.importorskip("torch")
    original = torch.cuda.get_device_capability
    report = preload.preload(["torch", "asks_capability"], capability=(9, 0))
    assert report["loaded"] == ["torch", "asks_capability"]
    assert report["capability_from_nvml"] == [9, 0]
    assert not report["cuda_initialized"]
    import asks_capability

    assert asks_capability.ANSWER == (9, 0)
    assert torch.cuda.get_device_capability is original  # restored after the preload


def test_preload_answers_dynamos_device_properties_from_nvml(tmp_path, monkeypatch):
    # torchao's mx_formats kernels call torch.utils._triton.has_triton() at import, which asks
    # dynamo's CudaInterface.Worker.get_device_properties().major: torch.cuda.current_device()
    # initialised CUDA in the preload on the H200. It is answered with the NVML capability.
    (tmp_path / "asks_properties.py").write_text(
        "from torch._dynamo.device_interface import CudaInterface\n"
        "PROPERTIES = CudaInterface.Worker.get_device_properties()\n"
        "ANSWER = (PROPERTIES.major, PROPERTIES.minor)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pytest.importorskip("torch")
    from torch._dynamo.device_interface import CudaInterface

    original = CudaInterface.Worker.get_device_properties
    report = preload.preload(["torch", "asks_properties"], capability=(9, 0))
    assert report["loaded"] == ["torch", "asks_properties"]
    assert not report["cuda_initialized"]
    import asks_properties

    assert asks_properties.ANSWER == (9, 0)
    assert CudaInterface.Worker.get_device_properties is original  # restored


def test_preload_without_a_shared_capability_leaves_cuda_to_answer(tmp_path, monkeypatch):
    (tmp_path / "asks_capability_2.py").write_text(
        "import torch\nANSWER = torch.cuda.get_device_capability()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pytest.importorskip("torch")
    monkeypatch.setattr(preload, "nvml_capability", lambda: None)  # GPUs differ, or no NVML
    report = preload.preload(["torch", "asks_capability_2"])
    assert report["capability_from_nvml"] is None
    if "asks_capability_2" in report["loaded"]:  # a CUDA build answered itself
        import torch

        assert torch.cuda.is_available()
    else:  # this CPU build of torch cannot answer: the import failed and is reported
        assert "asks_capability_2" in report["failed"]


def test_nvml_capability_needs_every_gpu_to_agree(monkeypatch):
    import types

    from llmbench.host import nvml

    capabilities = [(9, 0), (9, 0)]
    fake = types.SimpleNamespace(
        nvmlDeviceGetCount=lambda: len(capabilities),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetCudaComputeCapability=lambda handle: capabilities[handle],
    )
    monkeypatch.setattr(nvml, "pynvml", fake)
    monkeypatch.setattr(nvml, "available", lambda: True)
    monkeypatch.setattr(nvml, "shutdown", lambda: None)
    assert preload.nvml_capability() == (9, 0)
    capabilities[1] = (8, 9)
    assert preload.nvml_capability() is None
    capabilities.clear()
    assert preload.nvml_capability() is None


def test_nvml_capability_leaves_nvml_shut_down_for_the_children(monkeypatch):
    # A child forked with NVML initialised in the server read no devices on the H200: every
    # warm-started cell recorded gpu_clean unknown. The server must hold no NVML state.
    import types

    from llmbench.host import nvml

    state = {"inits": 0, "shutdowns": 0}

    def init():
        state["inits"] += 1

    def shut():
        state["shutdowns"] += 1

    fake = types.SimpleNamespace(
        nvmlInit=init,
        nvmlShutdown=shut,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetCudaComputeCapability=lambda handle: (9, 0),
    )
    monkeypatch.setattr(nvml, "pynvml", fake)
    nvml.available.cache_clear()
    try:
        assert preload.nvml_capability() == (9, 0)
        assert state == {"inits": 1, "shutdowns": 1}
        assert nvml.available.cache_info().currsize == 0  # a child initialises its own
    finally:
        nvml.available.cache_clear()


def test_the_frontier_simulation_forks_from_the_server(use_server, monkeypatch):
    # A search's simulated start runs in a child that sees no GPU; with a server it is forked
    # (torch and transformers already imported) and answers as a fresh interpreter would.
    pytest.importorskip("transformers")
    import json

    from llmbench.frontier import simulated
    from llmbench.frontier.planning import Search
    from llmbench.frontier.search import grid_values

    search = Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 2)
    spec = {
        "search": search.to_dict(),
        "values": grid_values(128, 1024, 128),
        "config": json.loads((REPO / "config/models/tiny-mistral.json").read_text()),
        "measurement": {"warmup": 0, "repeats": 1, "decode_tokens": 2, "decode_warmup_tokens": 0},
        "capacity": 2**20,
        "compute_dtype": "bfloat16",
    }

    def no_fresh_child(*args):
        raise AssertionError("spawned a fresh interpreter although a server serves")

    monkeypatch.setattr(simulated, "_frontier_in_fresh_child", no_fresh_child)
    outcome = simulated.frontier_in_child(spec, timeout_s=300)
    assert outcome["status"] == "below_min" and len(outcome["simulated"]) == 2
