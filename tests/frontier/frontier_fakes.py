"""Fakes shared by the frontier tests (tests/frontier/test_*.py): an oracle for the pure search,
a fake cell runner, the tiny CPU frontier section and a search on it with the fake runner."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmbench import GIB, frontier
from llmbench.frontier import Search
from llmbench.record.cell import write_json_atomic


class Oracle:
    """Runs up to ``limit`` (inclusive); counts calls; optional non-memory statuses."""

    def __init__(self, limit: float, special: dict[int, str] | None = None) -> None:
        self.limit = limit
        self.special = special or {}
        self.calls: list[int] = []

    def __call__(self, value: int) -> str:
        self.calls.append(value)
        if value in self.special:
            return self.special[value]
        return "ok" if value <= self.limit else "oom"


def truth(values: list[int], limit: float) -> int | None:
    fitting = [v for v in values if v <= limit]
    return fitting[-1] if fitting else None


TINY_SECTION = yaml.safe_load(
    (Path(__file__).parents[2] / "config/frontier-tiny.yaml").read_text()
)["frontier"]


class FakeRunner:
    """Writes a valid CPU cell JSON whose RSS growth is ``bytes_per_token * batch * seq``."""

    def __init__(self, bytes_per_token: float, budget_gib: float, status: str | None = None):
        self.bytes_per_token = bytes_per_token
        self.budget = budget_gib * GIB
        self.status = status
        self.calls: list[str] = []

    def __call__(self, *, cell, settings, out_path, **kwargs):
        from llmbench.measure.failures import MemoryBudgetExceeded, classify
        from llmbench.measure.timing import LatencyStats
        from llmbench.record.cell import new_result

        self.calls.append(cell.relpath)
        result = new_result(cell.to_dict(), settings)
        growth = int(self.bytes_per_token * cell.batch * cell.seq)
        base = 300 * 2**20
        status = self.status or ("ok" if growth <= self.budget else "oom")
        host = {"devices": [], "host": {"rss_bytes": base, "peak_rss_bytes": base + growth}}
        result.update(
            status=status,
            phase=None if status == "ok" else "prefill",
            reason=None if status == "ok" else f"fake {status}",
            error=None
            if status in ("ok", "unsupported")
            else classify(MemoryBudgetExceeded(f"memory budget exceeded ({status})")).to_dict(),
            memory={
                "unit": "bytes",
                "devices": [],
                "host_rss_before_load_bytes": base,
                "phases": {"load": host, "prefill": host, "decode": host},
            },
            timing_breakdown={"wall_s": 0.01},
        )
        result["cell"]["device"] = "cpu"
        if status == "ok":
            stats = LatencyStats.from_samples([1.0]).to_dict()
            result["latency"] = {
                "timer": "fake",
                "prefill": stats,
                "decode_per_token": stats,
                "ttft_ms": 1.0,
                "decode_tokens_per_s": 1.0,
            }
            result["efficiency"] = {}
        write_json_atomic(out_path, result)
        return result


def fake_settings(budget_gib=0.5):
    return {
        "device": "cpu",
        "device_map": "auto",
        "bnb_4bit_compute_dtype": "bfloat16",
        "memory_budget_gib": budget_gib,
        "cell_timeout_s": 60,
        "prequantize": True,
        "measurement": {"warmup": 0, "repeats": 1, "decode_tokens": 2},
        "probe_environment": {},
    }


def run_fake_search(tmp_path, runner, settings, section=None, predictor=None, name="seq_b2.json"):
    search = Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 2)
    return frontier.run_search(
        search,
        section=section or {**TINY_SECTION, "seq_min": 128, "seq_max": 8192, "step": 128},
        settings=settings,
        model_entry={"architecture": "config/models/tiny-mistral.json"},
        base_dir=None,
        prequantized_dir=None,
        probes_dir=tmp_path / "probes",
        out_path=tmp_path / name,
        has_cuda=False,
        predictor=predictor,
        runner=runner,
        log=lambda message: None,
    )
