"""The model registry's entries, checked before any job: an ``architecture:`` file must be a
JSON object transformers can build a causal LM config from, a ``pretrained:`` path must be a
checkpoint folder, and a hub id is allowed only where the entry says ``allow_download: true``.

Every error names the entry's key (``models.<name>.<field>``) and, for a file, the file.
Cells run with the Hub off unless their entry allows downloads (``allows_download``;
``llmbench.run.child`` sets ``HF_HUB_OFFLINE`` from it).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmbench.grid.files import ConfigFileError, InputError, read_json

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
"""A Hugging Face Hub repository id: ``name`` or ``namespace/name``."""

WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")
"""dtypes an architecture config may name for its random weights."""

CHECK_CACHE = Path(".snakemake") / "llmbench" / "architectures-checked.json"
"""Architecture files transformers already accepted (content hash -> transformers version),
kept in the Snakemake working directory so that a rerun does not import transformers again."""


class ModelEntryError(InputError):
    """A model entry cannot be used; the message names its key (and file)."""


def allows_download(entry: Mapping[str, Any] | None) -> bool:
    """Whether a model entry may fetch weights from the Hugging Face Hub (opt-in)."""
    return bool(entry and entry.get("allow_download") is True)


def resolve(path: str, base: Path) -> Path:
    """A path from the config: ``~`` expanded, relative ones against ``base`` (the repo)."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else base / expanded


def check_pretrained(name: str, entry: Mapping[str, Any], base: Path) -> None:
    """A local checkpoint folder (with a config.json), or a hub id where downloads are allowed."""
    value = str(entry["pretrained"])
    key = f"models.{name}.pretrained"
    local = resolve(value, base)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelEntryError(f"{key}: {local} has no config.json (not a checkpoint folder)")
        return
    if local.exists():
        raise ModelEntryError(f"{key}: {local} is a file; give the checkpoint's folder")
    if allows_download(entry):
        if not HUB_ID.match(value):
            raise ModelEntryError(
                f"{key}: {value!r} is neither an existing folder nor a hub id (namespace/name)"
            )
        return
    raise ModelEntryError(
        f"{key}: no such folder {value!r} (relative paths are relative to {base}); "
        f"to download a hub id instead, set models.{name}.allow_download: true"
    )


SIZE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "ffn_dim",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "sliding_window",
    "num_experts",
    "num_local_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
)
"""config.json sizes that must be whole numbers of at least 1 where given (null: not used):
transformers builds a config with ``hidden_size: -128`` and fails only when the checkpoint is
made, after the run started."""


def read_architecture(name: str, path: str, base: Path) -> tuple[Path, dict[str, Any]]:
    """The architecture file of an entry, parsed; errors name the key and the file."""
    key = f"models.{name}.architecture"
    file = resolve(path, base)
    if not file.is_file():
        raise ModelEntryError(f"{key}: no such file {path!r} (paths are relative to {base})")
    try:
        config = read_json(file)
    except ConfigFileError as exc:
        raise ModelEntryError(f"{key}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelEntryError(f"{key}: {file}: must hold a JSON object (a config.json)")
    if not isinstance(config.get("model_type"), str):
        raise ModelEntryError(f"{key}: {file}: has no 'model_type' (transformers needs it)")
    for size in SIZE_KEYS:
        value = config.get(size)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ModelEntryError(f"{key}: {file}: {size} {value!r} is not a whole number")
        if value is not None and value < 1:
            raise ModelEntryError(f"{key}: {file}: {size} {value!r} must be at least 1")
    dtype = config.get("torch_dtype") or config.get("dtype")
    if dtype is not None and dtype not in WEIGHT_DTYPES:
        raise ModelEntryError(
            f"{key}: {file}: dtype {dtype!r} is not one of: {', '.join(WEIGHT_DTYPES)}"
        )
    return file, config


def transformers_problem(config: Mapping[str, Any]) -> str | None:
    """Why transformers cannot build a causal LM config from ``config``; None when it can."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING_NAMES:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING_NAMES), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        return f"model_type {model_type!r} is not known to this transformers{hint}"
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"model_type {model_type!r} has no causal language model in transformers"
    try:
        built = AutoConfig.for_model(**config)
    except Exception as exc:  # noqa: BLE001 - any refusal is reported, naming the file
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return built_config_problem(config, built)


REQUIRED_SIZES = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)
"""Sizes a config.json must state: transformers fills a missing one with its class's default
(a 32-layer Mistral for a file without ``num_hidden_layers``), which is a different model."""

TYPO_SIMILARITY = 0.9
"""``difflib`` ratio above which an unknown key is taken for a misspelt known one (one letter
off in a key of 10 or more letters: ``num_hidden_layer``, ``vocab_sze``)."""


def _attribute(built: Any, name: str) -> Any:
    """``built.<name>``, or None where the config class has no such attribute (or refuses to
    give one: Gemma 4's per-layer attributes raise their own error)."""
    try:
        return getattr(built, name, None)
    except Exception:  # noqa: BLE001 - any refusal means: not a plain attribute here
        return None


def built_config_problem(config: Mapping[str, Any], built: Any) -> str | None:
    """Why the config transformers built (``built``) from ``config`` is not the model the file
    describes, or cannot run; None when it is fine: a misspelt key (transformers keeps it as
    an unused attribute and builds its default), a missing :data:`REQUIRED_SIZES` (of those
    its family has, under their own names: GPT-2's ``n_embd``) that the class's default
    fills, a missing ``num_key_value_heads`` whose class default is not
    ``num_attention_heads`` (what the memory model reads from the file), heads not a
    multiple of K/V heads, an odd rotary head_dim, more experts per token than experts, an
    unknown activation, a non-finite number, a ``quantization_config`` (the grid's ``quant``
    axis quantizes; an architecture file is the unquantized model). A family without
    attention heads (Mamba) gets the first checks only."""
    if "quantization_config" in config:
        return "has a quantization_config: give the unquantized model (the quant axis quantizes)"
    from transformers.activations import ACT2FN

    try:
        default = type(built)()
    except Exception:  # noqa: BLE001 - a class that needs arguments: what it built knows
        default = built
    known = set(default.to_dict())
    for key, value in config.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} is {value}: not a finite number"
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=TYPO_SIMILARITY)
        if key not in known and close and close[0] not in config:
            return (
                f"{key!r} is not a {config['model_type']} config key: {close[0]!r} misspelt? "
                f"(transformers would ignore it and build {close[0]} = "
                f"{_attribute(built, close[0])!r})"
            )
    aliases = getattr(type(built), "attribute_map", None) or {}  # hidden_size -> n_embd
    family = known | {name for name, own in aliases.items() if own in known}
    stated = set(config) | {name for name, own in aliases.items() if own in config}
    missing = [  # left out and built as the class's default, not derived (Mamba's 2 x hidden)
        key
        for key in REQUIRED_SIZES
        if key in family
        and key not in stated
        and _attribute(built, key) == _attribute(default, key)
    ]
    if missing:
        return f"no {', '.join(missing)}: transformers would build its defaults; write them out"
    heads, hidden = _attribute(built, "num_attention_heads"), _attribute(built, "hidden_size")
    if not isinstance(heads, int) or not isinstance(hidden, int) or heads < 1:
        return None  # no attention heads (Mamba, RWKV) or per-layer sizes: nothing more here
    kv_heads = _attribute(built, "num_key_value_heads")
    if "num_key_value_heads" not in config and kv_heads not in (None, heads):
        return (
            f"no num_key_value_heads: transformers builds {kv_heads} (its default), the memory "
            f"model would read {heads} (num_attention_heads); write it out"
        )
    if isinstance(kv_heads, int) and kv_heads and heads % kv_heads:
        return f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
    head_dim = _attribute(built, "head_dim") or hidden // heads
    if _attribute(built, "rope_parameters") and isinstance(head_dim, int) and head_dim % 2:
        return f"head_dim {head_dim} is odd: rotary embeddings rotate pairs of channels"
    experts = _attribute(built, "num_local_experts") or _attribute(built, "num_experts")
    top_k = _attribute(built, "num_experts_per_tok")
    if isinstance(experts, int) and isinstance(top_k, int) and top_k > experts:
        return f"num_experts_per_tok {top_k} is more than the {experts} experts"
    for key in ("hidden_act", "hidden_activation"):
        act = config.get(key)
        if isinstance(act, str) and act not in ACT2FN:
            close = difflib.get_close_matches(act, list(ACT2FN), n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            return f"{key} {act!r} is not an activation transformers knows{hint}"
    return None


CHECKS_REVISION = 2
"""Bumped when :func:`transformers_problem` checks more: an architecture accepted by an older
revision (a cache entry of :data:`CHECK_CACHE`) is checked again."""


def _transformers_version() -> str | None:
    """transformers' version with :data:`CHECKS_REVISION` (what a cache entry records)."""
    try:
        return f"{importlib.metadata.version('transformers')}+checks{CHECKS_REVISION}"
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_cache(path: Path | None) -> dict[str, str]:
    try:
        cached = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _write_cache(path: Path | None, cache: Mapping[str, str]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache only: a read-only folder costs the next run the import


def check_with_transformers(
    architectures: Mapping[str, tuple[Path, dict[str, Any]]], cache_path: Path | None
) -> str | None:
    """Have transformers build each architecture's config; returns a note for the user when
    this host has no transformers (then only the JSON was checked)."""
    version = _transformers_version()
    skipped = (
        "transformers cannot be imported here: architecture files were parsed, but not "
        "checked by transformers (the model-building jobs check them)"
    )
    if version is None:
        return skipped
    cache = _read_cache(cache_path)
    unchecked = {}
    for name, (file, config) in architectures.items():
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        if cache.get(digest) != version:
            unchecked[name] = (file, config, digest)
    for name, (file, config, digest) in sorted(unchecked.items()):
        try:
            problem = transformers_problem(config)
        except ImportError:
            return skipped
        if problem:
            raise ModelEntryError(f"models.{name}.architecture: {file}: {problem}")
        cache[digest] = version
    if unchecked:
        _write_cache(cache_path, cache)
    return None


def check_entries(
    models: Mapping[str, Mapping[str, Any]], base: Path, *, cache_path: Path | None = None
) -> list[str]:
    """Check every model entry (see the module docstring); raise ModelEntryError on the first
    bad one. Returns notes for the user (checks this host could not make)."""
    architectures = {}
    for name, entry in sorted(models.items()):
        if "architecture" in entry:
            architectures[name] = read_architecture(name, str(entry["architecture"]), base)
        if "pretrained" in entry:
            check_pretrained(name, entry, base)
    if not architectures:
        return []
    note = check_with_transformers(architectures, cache_path)
    return [note] if note else []
