"""The frontier predicted to the step: each probe of a search decided by simulating the caching
allocator on the probe cell's traced allocation events (``llmbench.predict.oom``) instead of
running it, searched with the same bisection (:func:`llmbench.frontier.search.bisect_frontier`,
plain, from the middle). With ok/oom monotone along the axis (more tokens or sequences never
need less memory) this finds the step where the simulated outcome turns, in
``ceil(log2(len(values))) + 2`` traced cells at most.

Checked against the 24 searches of the committed H100 frontier
(``results/reference/h100/frontier/``; tests/frontier/test_simulated.py): see that test for
what agrees. May import :mod:`.planning`, :mod:`.search` and ``llmbench.predict.oom``
(lazily: the tracer needs torch and transformers), and ``llmbench.run`` to fork its child
from the warm-start server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llmbench.frontier.planning import Search
from llmbench.frontier.search import SearchOutcome, bisect_frontier

SIMULATION_TIMEOUT_S = 1800.0
"""Wall-clock limit of the child that simulates one search (:func:`frontier_in_child`): the
default ``cell_timeout_s`` of config/config.yaml, so a hung simulation holds a search no
longer than one measured probe may run. A search traces at most ``ceil(log2(len(values)))
+ 2`` cells (1-5 s of CPU each, ``predict.trace.cache``) plus their allocator replays; the
limit only stops a child that hangs."""

Decide = Callable[[Search, int], str]
"""``decide(search, value) -> "ok" | "oom"``: one probe's simulated outcome."""


def simulator_decide(
    model_config: Mapping[str, Any],
    measurement: Mapping[str, Any],
    capacity: int,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
    trace: Callable[..., Any] | None = None,
) -> Decide:
    """A :data:`Decide` that traces the probe cell under ``measurement`` (the probes'
    measurement settings; ``trace`` as ``llmbench.predict.oom.simulate_cell`` takes it) and
    replays it on ``capacity`` bytes in its allocator mode; an untraceable cell is
    ``untraceable``, which stops the search."""
    from llmbench.predict.oom import simulate_cell
    from llmbench.predict.trace.model import Untraceable

    def decide(search: Search, value: int) -> str:
        try:
            outcome = simulate_cell(
                model_config,
                search.cell(value),
                measurement,
                capacity,
                bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
                trace=trace,
            )
        except Untraceable:
            return "untraceable"
        return outcome.status

    return decide


def simulated_frontier(
    search: Search, values: Sequence[int], decide: Decide
) -> tuple[SearchOutcome, list[int]]:
    """The frontier of ``search`` over the ascending step grid ``values`` with every probe
    answered by ``decide`` (no GPU), and the values actually simulated, in order.

    The largest value is simulated first, then, if it fails, the smallest; after that a value
    at or below one that ran is ``ok`` and one at or above one that failed is ``oom`` without
    simulating (monotone), so a search whose maximum runs (sdpa and FlashAttention-2 at 32768
    tokens) costs one cell and one whose minimum fails two."""
    values = list(values)
    simulated: list[int] = []
    largest_ok, smallest_fail = None, None

    def probe(value: int) -> str:
        nonlocal largest_ok, smallest_fail
        if largest_ok is not None and value <= largest_ok:
            return "ok"
        if smallest_fail is not None and value >= smallest_fail:
            return "oom"
        status = decide(search, value)
        simulated.append(value)
        if status == "ok":
            largest_ok = value
        elif status == "oom":
            smallest_fail = value
        return status

    if probe(values[-1]) == "oom" and len(values) > 1:
        probe(values[0])  # a search where nothing runs (eager at 32768 tokens) ends here
    return bisect_frontier(values, probe, extra_probes=0), simulated


def frontier_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`simulated_frontier` of a JSON ``spec`` (``search``: :meth:`Search.to_dict`,
    ``values``, ``config``: config.json, ``measurement``, ``capacity`` bytes,
    ``compute_dtype``): ``{status, largest_ok, first_fail, simulated}``."""
    fields = {k: v for k, v in spec["search"].items() if k != "name"}
    decide = simulator_decide(
        spec["config"],
        spec["measurement"],
        int(spec["capacity"]),
        bnb_4bit_compute_dtype=spec["compute_dtype"],
    )
    outcome, simulated = simulated_frontier(Search(**fields), spec["values"], decide)
    return {
        "status": outcome.status,
        "largest_ok": outcome.largest_ok,
        "first_fail": outcome.first_fail,
        "simulated": simulated,
    }


def frontier_in_child(
    spec: Mapping[str, Any], timeout_s: float = SIMULATION_TIMEOUT_S
) -> dict[str, Any]:
    """:func:`frontier_of` in a child process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``):
    importing bitsandbytes initialises CUDA, and a CUDA context held by the search process
    would take device memory from the probes it runs. The child is forked from this run's
    warm-start server where one serves (torch and transformers already imported: on the H200
    a fresh interpreter spent 12-21 s importing them), else a fresh interpreter. Raises
    ``RuntimeError`` with the child's last output when it fails,
    ``subprocess.TimeoutExpired`` past ``timeout_s``."""
    import os
    from pathlib import Path

    from llmbench.run import warmstart

    socket_path = os.environ.get(warmstart.SOCKET_VARIABLE)
    if socket_path and Path(socket_path).exists():
        try:
            return _frontier_in_warm_child(spec, socket_path, timeout_s)
        except OSError:  # the server did not fork: a fresh interpreter does the same
            pass
    return _frontier_in_fresh_child(spec, timeout_s)


def _child_environment() -> dict[str, str]:
    import os

    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def _frontier_in_fresh_child(spec: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-m", "llmbench.frontier.simulated"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=_child_environment(),
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"simulated frontier failed: {child.stderr.strip()[-500:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _frontier_in_warm_child(
    spec: Mapping[str, Any], socket_path: str, timeout_s: float
) -> dict[str, Any]:
    """The same in a child the warm-start server forks (the spec and the answer go through
    files, its output to a log). Raises OSError when the server does not fork."""
    import json
    import tempfile
    from pathlib import Path

    from llmbench.run.warmchild import WarmChild

    with tempfile.TemporaryDirectory(prefix="llmbench-simulated-") as folder:
        spec_path, out_path, log_path = (Path(folder) / n for n in ("spec", "out", "log"))
        spec_path.write_text(json.dumps(spec))
        argv = ["llmbench.frontier.simulated", str(spec_path), str(out_path)]
        child = WarmChild.start(socket_path, argv, _child_environment(), str(log_path))
        try:
            code = child.wait(timeout_s)
        except BaseException:
            child.conn.close()  # the server kills a child whose runner went away
            raise
        if code != 0 or not out_path.exists():
            tail = log_path.read_text()[-500:] if log_path.exists() else ""
            raise RuntimeError(f"simulated frontier failed (exit {code}): {tail.strip()}")
        return json.loads(out_path.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m llmbench.frontier.simulated < spec.json``: prints :func:`frontier_of`;
    ``... SPEC OUT``: reads the spec from the file SPEC and writes the answer to OUT."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args:
        from pathlib import Path

        answer = frontier_of(json.loads(Path(args[0]).read_text()))
        Path(args[1]).write_text(json.dumps(answer))
        return 0
    print(json.dumps(frontier_of(json.loads(sys.stdin.read()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
