"""The runner's side of the warm-start protocol: ask the server to fork a cell's worker.

``WarmChild`` stands in for ``subprocess.Popen`` (``pid``, ``wait``, ``returncode``), so the
runner treats a forked child like a spawned one. May import ``llmbench.run.warmstart`` (the
protocol's message format); the server never imports this module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from llmbench.run.warmstart import send_message


class WarmChild:
    """A cell's child forked by the server, with the part of ``subprocess.Popen``'s interface
    the runner uses (``pid``, ``wait``, ``returncode``)."""

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.returncode: int | None = None
        self.exec_for: list[str] = []
        self._buffer = b""

    @classmethod
    def start(
        cls,
        socket_path: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: str | None,
        cwd: str | None = None,
    ) -> WarmChild:
        """Ask the server to fork the worker ``python -m argv...``; raises OSError when the
        server cannot be reached (the caller then starts a process the ordinary way)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(30.0)
        try:
            conn.connect(socket_path)
            send_message(
                conn,
                {
                    "argv": list(argv),
                    "env": dict(env),
                    "log_path": log_path,
                    "cwd": cwd or os.getcwd(),
                },
            )
            child = cls(conn, -1)
            reply = child._read(30.0)
            child.pid = int(reply["pid"])
            child.exec_for = list(reply.get("exec_for") or [])
        except (OSError, ValueError, KeyError) as exc:
            conn.close()
            raise OSError(f"warm-start server at {socket_path} did not fork: {exc}") from exc
        return child

    def _read(self, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired("warm-start child", timeout or 0)
            self.conn.settimeout(left)
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                raise subprocess.TimeoutExpired("warm-start child", timeout or 0) from None
            if not data:
                raise OSError("warm-start server closed the connection")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    @property
    def start_method(self) -> str:
        """How the child started, for the cell's ``timing_breakdown``."""
        if self.exec_for:
            return "fork+exec from warm-start server (start-up variables differ: " + (
                ", ".join(self.exec_for) + ")"
            )
        return "fork from warm-start server"

    def wait(self, timeout: float | None = None) -> int:
        """The child's exit code (negative: signal), like ``Popen.wait``."""
        if self.returncode is None:
            try:
                self.returncode = int(self._read(timeout)["returncode"])
            except OSError:  # server gone: the child died with it (PDEATHSIG)
                self.returncode = -signal.SIGKILL
            self.conn.close()
        return self.returncode
