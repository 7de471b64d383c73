"""Warm start: import torch and transformers once, then fork one fresh process per cell.

On the H100 host a cell's child spent 10-22 s importing torch and transformers before doing
anything (``benchmarks/startup_profile.py``). A warm-start server imports them once and forks
a child per cell. Every cell still gets its own process, CUDA context and caching allocator:
the server never initialises CUDA (``PYTORCH_NVML_BASED_CUDA_CHECK=1`` keeps
``torch.cuda.is_available()`` off the driver, and bitsandbytes, whose import initialises CUDA,
is never preloaded), which the profile showed is what a forked child needs to use the GPU.

Protocol (one JSON line each way over a Unix socket): the runner sends the worker's argv,
environment, working directory and log path; the server forks and answers ``{"pid": N}``,
then ``{"returncode": R}`` once the child is gone (negative: killed by signal -R, as
``subprocess`` reports it). If the runner's connection drops (the job was killed), the server
kills the child's process group. The server forks from its single Python thread; native
helper threads its libraries started at import stay idle there (a child that hung on one
would still end as a ``timeout`` cell, like any other). Variables that only take effect when
a process starts (glibc's ``MALLOC_*``, the loader's ``LD_*``, OpenMP's) make the child
``exec`` a fresh interpreter instead, so they are never silently ignored.
"""

from __future__ import annotations

import ctypes
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmbench.run.preload import PRELOAD, preload, refusal_reason

SOCKET_VARIABLE = "LLMBENCH_WARMSTART_SOCKET"
"""Environment variable naming the server's socket; cells use the server when it is set."""

STARTUP_ONLY_PREFIXES = (
    "MALLOC_",
    "LD_",
    "GLIBC_TUNABLES",
    "OMP_",
    "KMP_",
    "MKL_",
    "HF_HUB_OFFLINE",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ALLOC_CONF",
)
"""Variables read when a process starts (or, like huggingface_hub's ``HF_HUB_OFFLINE``, once
at import, which the server has done; PyTorch may parse its allocator configuration at
import): a child whose value differs must exec afresh."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Start-up variables a forked child can still honour (``torch.set_num_threads``); Snakemake
sets them per job to the job's threads."""


def startup_differences(env: Mapping[str, str], server_env: Mapping[str, str]) -> list[str]:
    """Start-up-only variables whose value differs between a request and the server."""
    return sorted(
        key
        for key in set(env) | set(server_env)
        if key.startswith(STARTUP_ONLY_PREFIXES)
        and key not in THREAD_VARIABLES
        and env.get(key) != server_env.get(key)
    )


PR_SET_PDEATHSIG = 1
"""prctl option: the signal a process gets when its parent dies (Linux)."""


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere a no-op).

    Run in a child before exec (``preexec_fn``) or right after fork: cell processes run in
    their own session, so without this a killed job (Ctrl-C, a scheduler, ``timeout``) would
    leave a worker holding the GPU and spoil the next cell's clean-GPU check.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def send_message(conn: socket.socket, message: Mapping[str, Any]) -> None:
    """One protocol message: a JSON object on one line."""
    conn.sendall((json.dumps(message) + "\n").encode())


def _child(request: Mapping[str, Any], exec_afresh: bool) -> None:
    """In the forked child: become the worker described by ``request``; never returns."""
    code = 1
    try:
        os.setsid()
        die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's handlers are not ours
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log_path = request.get("log_path")
        out = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        env = dict(request["env"])
        argv = list(request["argv"])
        os.chdir(request.get("cwd") or ".")
        if exec_afresh:
            os.execve(sys.executable, [sys.executable, "-m", *argv], env)
        os.environ.clear()
        os.environ.update(env)
        threads = env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS")
        if threads and threads.isdigit() and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        module, args = argv[0], argv[1:]
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - report, then leave with a failure code
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def refused_path(socket_path: str | Path) -> Path:
    """The file a server that refused to serve leaves beside its socket, saying why; cells
    that find it record the reason in ``timing_breakdown.start_method``."""
    socket_path = Path(socket_path)
    return socket_path.with_name(socket_path.name + ".refused")


def serve(socket_path: str | Path, modules: Sequence[str] = PRELOAD) -> int:
    """Preload ``modules`` and serve fork requests on ``socket_path`` until SIGTERM.

    Single-threaded: one selector loop accepts requests, forks, reaps children and notices
    runners that went away. The socket appears only once the preload is done.
    """
    socket_path = Path(socket_path)
    # The environment cells are compared with: the one the server was started with. Imports
    # set variables of their own (scikit-learn sets KMP_DUPLICATE_LIB_OK, KMP_INIT_AT_FORK).
    server_env = dict(os.environ)
    report = preload(modules)
    print(json.dumps({"warmstart_preload": report}), flush=True)
    refusal = refusal_reason(report)
    if refusal:
        print(f"no warm start: {refusal}", flush=True)
        refused_path(socket_path).write_text(refusal + "\n")
        return 1
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = socket_path.with_name(socket_path.name + f".{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    listener.bind(str(tmp))
    listener.listen(16)
    os.replace(tmp, socket_path)  # appears atomically, ready
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    children: dict[int, socket.socket | None] = {}  # pid -> its runner's connection (None: gone)
    buffers: dict[socket.socket, bytes] = {}
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            for key, _ in selector.select(timeout=0.05):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    buffers[conn] = b""
                    selector.register(conn, selectors.EVENT_READ, None)
                    continue
                conn = key.fileobj  # type: ignore[assignment]
                data = conn.recv(65536)
                pid = next((p for p, c in children.items() if c is conn), None)
                if not data:  # the runner is gone: take its child down
                    selector.unregister(conn)
                    conn.close()
                    buffers.pop(conn, None)
                    if pid is not None:
                        _kill_group(pid)
                        children[pid] = None  # reaped below, nobody to tell
                    continue
                buffers[conn] += data
                if pid is None and b"\n" in buffers[conn]:
                    line, buffers[conn] = buffers[conn].split(b"\n", 1)  # one request each
                    request = json.loads(line)
                    differences = startup_differences(request["env"], server_env)
                    child = os.fork()
                    if child == 0:
                        listener.close()
                        conn.close()
                        _child(request, exec_afresh=bool(differences))
                    children[child] = conn
                    send_message(conn, {"pid": child, "exec_for": differences})
            _reap(children)
    finally:
        for pid in list(children):
            _kill_group(pid)
        socket_path.unlink(missing_ok=True)
        listener.close()
    return 0


def _reap(children: dict[int, socket.socket | None]) -> None:
    """Collect finished children and tell their runners how they ended."""
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done == 0:
            continue
        conn = children.pop(pid)
        if conn is None:
            continue
        try:
            send_message(conn, {"returncode": os.waitstatus_to_exitcode(status)})
        except OSError:
            pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_SERVER: subprocess.Popen[bytes] | None = None
"""The server this process started, if any (stopped by :func:`stop_server`)."""


def start_server(socket_path: str | Path, log_path: str | Path | None = None) -> Any:
    """Start ``python -m llmbench.run.warmstart SOCKET`` in the background, dying with this
    process, and point this process's future cells at it (through the environment)."""
    global _SERVER
    from llmbench.run.child import worker_environment

    socket_path = Path(socket_path).resolve()
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    refused_path(socket_path).unlink(missing_ok=True)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # The server and every cell (forked or spawned) check CUDA through NVML, never the driver.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmbench.run.warmstart", str(socket_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=worker_environment(),
            preexec_fn=die_with_parent,
        )
    finally:
        if log is not subprocess.DEVNULL:
            log.close()  # the server holds its own copy
    os.environ[SOCKET_VARIABLE] = str(socket_path)
    _SERVER = process
    return process


def stop_server(timeout_s: float = 30.0) -> None:
    """Stop the server :func:`start_server` started (if any) and remove its socket folder
    when empty; cells started afterwards spawn."""
    global _SERVER
    socket_path = os.environ.pop(SOCKET_VARIABLE, None)
    if _SERVER is not None:
        _SERVER.terminate()
        try:
            _SERVER.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _SERVER.kill()
            _SERVER.wait()
        _SERVER = None
    if socket_path:
        Path(socket_path).unlink(missing_ok=True)
        refused_path(socket_path).unlink(missing_ok=True)
        try:
            Path(socket_path).parent.rmdir()
        except OSError:  # not empty or already gone: leave it
            pass


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m llmbench.run.warmstart SOCKET``."""
    argv = sys.argv[1:] if argv is None else argv
    return serve(argv[0])


if __name__ == "__main__":
    raise SystemExit(main())
