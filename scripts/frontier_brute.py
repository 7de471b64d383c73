"""Check frontier searches against brute force: run the cells around each found frontier.

    python scripts/frontier_brute.py [--steps 2] [--searches results/frontier/searches]

For every search that found a frontier, the values ``frontier - steps*step`` ...
``frontier + (steps+1)*step`` (within the search's range) are measured as ordinary cells, each
in its own process, with the settings the search's probes used, into ``--out``
(default results/frontier/brute/, probes reused there on a rerun). The check passes when
every value up to the frontier runs and every value above it runs out of memory
(monotonicity, and the search's answer exact to the step). Exit status 1 when one does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from llmbench import REPO_ROOT, frontier
from llmbench.grid import plan as pipeline


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=Path, default=Path("results/frontier/searches"))
    parser.add_argument("--out", type=Path, default=Path("results/frontier/brute"))
    parser.add_argument("--steps", type=int, default=2, help="grid steps on each side")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "config" / "config.yaml")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    failures = 0
    for path in sorted(args.searches.rglob("*.json")):
        document = json.loads(path.read_text())
        if document["status"] != "found":
            continue
        search = frontier.Search(
            **{k: document["search"][k] for k in frontier.Search.__annotations__}
        )
        settings = {k: v for k, v in document["settings"].items() if k != "threads"}
        entry = config["models"][search.model]
        cache = config["cache_dir"]
        prequantized = pipeline.uses_prequantized(config, search.model, search.quant)
        probe = frontier.make_probe(
            search,
            settings=settings,
            model_entry=entry,
            base_dir=pipeline.base_checkpoint_dir(cache, search.model)
            if pipeline.needs_checkpoint(entry)
            else None,
            prequantized_dir=pipeline.prequantized_dir(cache, search.model, search.quant)
            if prequantized
            else None,
            probes_dir=args.out,
            logs_dir=None,
            timeout_s=float(settings["cell_timeout_s"]),
            log=lambda message: None,
        )
        step, found = document["step"], document["frontier"]
        values = [
            found + k * step
            for k in range(-args.steps, args.steps + 2)
            if document["values_min"] <= found + k * step <= document["values_max"]
        ]
        observed = {value: probe(value) for value in values}
        consistent = all(
            (record.status == "ok") == (value <= found) for value, record in observed.items()
        )
        failures += not consistent
        cells = ", ".join(
            f"{v}:{r.status}"
            + (f"({r.peak_bytes / 2**20:.1f}MiB)" if r.peak_bytes is not None else "")
            for v, r in observed.items()
        )
        print(
            f"{'ok  ' if consistent else 'FAIL'} {search.relpath}: frontier {found} "
            f"({document['n_probes']} probes) | {cells}",
            flush=True,
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
