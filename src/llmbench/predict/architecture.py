"""What the memory model reads from a model: the architecture facts of a transformers
config.json (``Architecture``), and where a registry entry's config.json lies
(``model_config_for``).

Imports ``llmbench.measure.efficiency.Shape`` and ``llmbench.predict.constants``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.measure.efficiency import Shape
from llmbench.predict.constants import DEFAULT_INITIALIZER_RANGE, granule


@dataclass(frozen=True)
class Architecture:
    """What the memory model needs from a config.json: the shape and a few flags."""

    shape: Shape
    model_type: str
    attention_bias: bool
    initializer_range: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Architecture:
        """Read a transformers config.json dict (Mistral, Llama, Qwen2 families)."""
        model_type = str(config.get("model_type") or "")
        return cls(
            shape=Shape.from_config(config),
            model_type=model_type,
            # Qwen2 hard-codes bias=True on q/k/v; Llama reads attention_bias; Mistral has none.
            attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
            initializer_range=float(config.get("initializer_range", DEFAULT_INITIALIZER_RANGE)),
        )

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (GQA group size)."""
        return self.shape.num_heads // self.shape.num_kv_heads

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each quantizable projection of one decoder layer:
        the Linear layers bitsandbytes replaces. Left in the model dtype: ``embed_tokens`` (not
        a Linear), ``lm_head`` (transformers' ``get_keys_to_not_convert`` keeps the output
        embedding), the RMSNorm weights, biases (bitsandbytes keeps them in 16/32-bit)."""
        s = self.shape
        q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        return {
            "q_proj": (q, s.hidden_size),
            "k_proj": (kv, s.hidden_size),
            "v_proj": (kv, s.hidden_size),
            "o_proj": (s.hidden_size, q),
            "gate_proj": (s.intermediate_size, s.hidden_size),
            "up_proj": (s.intermediate_size, s.hidden_size),
            "down_proj": (s.hidden_size, s.intermediate_size),
        }

    def kv_bytes(self, batch: int, tokens: int, dtype_bytes: int) -> int:
        """K and V of ONE layer for ``tokens`` positions (two allocations)."""
        s = self.shape
        return 2 * granule(batch * s.num_kv_heads * tokens * s.head_dim * dtype_bytes)


# ---- model registry --------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _read_json(path: str) -> dict[str, Any]:
    """A config.json's object; ValueError when the file holds JSON that is not an object."""
    config = json.loads(Path(path).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}: must hold a JSON object (a config.json)")
    return config


def model_config_for(
    model: str, models: Mapping[str, Any], repo_root: Path
) -> dict[str, Any] | None:
    """The architecture config.json of a registry entry, or None (pretrained without a local
    config.json, or unknown model)."""
    entry = models.get(model)
    if not entry:
        return None
    if entry.get("architecture"):
        path = repo_root / entry["architecture"]
        return _read_json(str(path)) if path.is_file() else None
    pretrained = entry.get("pretrained")
    if pretrained:
        local = Path(pretrained)
        local = local if local.is_absolute() else repo_root / local
        if (local / "config.json").is_file():
            return _read_json(str(local / "config.json"))
    return None
