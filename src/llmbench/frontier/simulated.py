"""The frontier predicted to the step: each probe of a search decided by simulating the caching
allocator on the probe cell's traced allocation events (``llmbench.predict.oom``) instead of
running it, searched with the same bisection (:func:`llmbench.frontier.search.bisect_frontier`,
plain, from the middle). With ok/oom monotone along the axis (more tokens or sequences never
need less memory) this finds the step where the simulated outcome turns, in
``ceil(log2(len(values))) + 2`` traced cells at most.

Checked against the 24 searches of the committed H100 frontier
(``results/reference/h100/frontier/``; tests/frontier/test_simulated.py): see that test for
what agrees. May import :mod:`.planning`, :mod:`.search` and ``llmbench.predict.oom``
(lazily: the tracer needs torch and transformers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llmbench.frontier.planning import Search
from llmbench.frontier.search import SearchOutcome, bisect_frontier

Decide = Callable[[Search, int], str]
"""``decide(search, value) -> "ok" | "oom"``: one probe's simulated outcome."""


def simulator_decide(
    model_config: Mapping[str, Any],
    measurement: Mapping[str, Any],
    capacity: int,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
) -> Decide:
    """A :data:`Decide` that traces the probe cell under ``measurement`` (the probes'
    measurement settings) and replays it on ``capacity`` bytes
    (``llmbench.predict.oom.simulate_cell``); an untraceable cell is ``untraceable``, which
    stops the search."""
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


def frontier_in_child(spec: Mapping[str, Any], timeout_s: float = 1800.0) -> dict[str, Any]:
    """:func:`frontier_of` in a child process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``):
    importing bitsandbytes initialises CUDA, and a CUDA context held by the search process
    would take device memory from the probes it runs. Raises ``RuntimeError`` with the
    child's last output when it fails, ``subprocess.TimeoutExpired`` past ``timeout_s``."""
    import json
    import os
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-m", "llmbench.frontier.simulated"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"simulated frontier failed: {child.stderr.strip()[-500:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> int:
    """``python -m llmbench.frontier.simulated < spec.json``: prints :func:`frontier_of`."""
    import json
    import sys

    print(json.dumps(frontier_of(json.loads(sys.stdin.read()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
