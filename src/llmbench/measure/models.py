"""Models without downloads: random-weight checkpoints from shipped architecture configs,
pre-quantized copies, and loading through the real ``from_pretrained`` path.

Memory and latency do not depend on weight values, so a checkpoint built from a model's
public config.json with random weights measures the same as the real one, while quantization
on load, attention selection and device placement stay the real library code paths.

The Hub is off in a cell unless its model entry allows downloads (``llmbench.run.child`` sets
``HF_HUB_OFFLINE=1``): ``from_pretrained`` then reads local files only, and a checkpoint that
is no local folder fails at once, saying so.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmbench.grid.files import read_json as read_config_file
from llmbench.grid.models import HUB_ID
from llmbench.measure.fp8 import build_torchao_config
from llmbench.measure.quantization import build_bnb_config, passes_config, stored_tensors
from llmbench.record.cell import read_json, write_json_atomic

MANIFEST = "checkpoint.json"
"""Written last into every checkpoint directory; its presence means the checkpoint is whole."""


def architecture_config(path: Path | str) -> dict[str, Any]:
    """A transformers config.json as a dict; a file that is not JSON raises ValueError naming
    the file, line and column."""
    return read_config_file(path)


def hub_offline() -> bool:
    """Whether this process runs with the Hugging Face Hub off (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def materialize(
    architecture: Path | str, out_dir: Path | str, *, seed: int, device: str
) -> dict[str, Any]:
    """Build a model from ``architecture`` with random weights and save it as safetensors.

    Weights are initialised on ``device`` (a GPU makes a 7B model in seconds) in the config's
    own dtype, then written with ``save_pretrained``. Returns the manifest.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = Path(out_dir)
    config_dict = architecture_config(architecture)
    config = AutoConfig.for_model(**config_dict)
    dtype_name = str(config_dict.get("torch_dtype") or config_dict.get("dtype") or "float32")
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=_torch_dtype(dtype_name))
    model.save_pretrained(out_dir, max_shard_size="5GB")
    n_parameters = sum(p.numel() for p in model.parameters())
    manifest = {
        "kind": "random-weights",
        "architecture": str(architecture),
        "model_type": config_dict.get("model_type"),
        "dtype": dtype_name,
        "seed": seed,
        "init_device": device,
        "n_parameters": n_parameters,
        "seconds": time.perf_counter() - started,
        "quantization": None,
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def prequantize(
    base_dir: Path | str, out_dir: Path | str, *, quant: str, compute_dtype: str, device: str
) -> dict[str, Any]:
    """Quantize a checkpoint once with bitsandbytes and serialize it, so cells load it as is.

    One per quant: the weights, the 4-bit type and double quantization are what it stores.
    ``compute_dtype`` is recorded in its config.json and manifest, but cells load it with their
    own compute dtype and int8 threshold (:func:`loading_config`). When quantization is
    impossible here (no bitsandbytes, or it refuses the device), the manifest says so and cells
    quantize on load instead, where the failure is classified.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    manifest: dict[str, Any] = {
        "kind": "prequantized",
        "base": str(base_dir),
        "quantization": quant,
        "compute_dtype": compute_dtype,
        "device": device,
    }
    try:
        from transformers import AutoModelForCausalLM

        base = read_json(Path(base_dir) / MANIFEST)
        model = AutoModelForCausalLM.from_pretrained(
            base_dir,
            dtype=_torch_dtype(base["dtype"]),
            quantization_config=build_bnb_config(quant, compute_dtype),
            device_map={"": 0} if device == "cuda" else "cpu",
        )
        model.save_pretrained(out_dir, max_shard_size="5GB")
        manifest.update(status="ok", dtype=base["dtype"])
    except Exception as exc:  # recorded, not fatal: cells fall back to quantizing on load
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
    manifest["seconds"] = time.perf_counter() - started
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def resolve_init_device(requested: str) -> str:
    """Device to build or quantize checkpoints on: ``auto`` means cuda when one is visible."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device_map(device_map: str, device: str) -> Any:
    """The device_map argument for from_pretrained."""
    if device == "cpu":
        return "cpu"
    return {"": 0} if device_map == "single" else device_map


def resolve_max_memory(cap_bytes: int | None, device: str) -> dict[int, int] | None:
    """The ``max_memory`` argument for from_pretrained: ``cap_bytes`` for every visible CUDA
    GPU, or None (not passed) without a cap or off CUDA."""
    if cap_bytes is None or device != "cuda":
        return None
    import torch

    return dict.fromkeys(range(torch.cuda.device_count()), cap_bytes)


def choose_checkpoint(
    model_entry: Mapping[str, Any],
    base_dir: Path | None,
    prequantized_dir: Path | None,
    *,
    quant: str,
) -> tuple[str, str]:
    """Pick what to load: (path or hub id, kind) with kind in base, prequantized, pretrained.

    A pre-quantized checkpoint is one per quant (weights, 4-bit type and double quantization
    are stored); the 4-bit compute dtype and the int8 threshold are set at load
    (:func:`loading_config`), so any cell of that quant loads it."""
    if "pretrained" in model_entry:
        return str(model_entry["pretrained"]), "pretrained"
    assert base_dir is not None
    if prequantized_dir is not None and passes_config(quant):
        manifest_path = prequantized_dir / MANIFEST
        if manifest_path.is_file():
            manifest = read_json(manifest_path)
            if manifest.get("status") == "ok" and manifest.get("quantization") == quant:
                return str(prequantized_dir), "prequantized"
    return str(base_dir), "base"


def load_kwargs(
    *,
    quant: str,
    attn_implementation: str,
    dtype: str,
    device_map: Any,
    compute_dtype: str,
    llm_int8_threshold: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``AutoModelForCausalLM.from_pretrained`` for one cell.

    ``compute_dtype``: the 4-bit compute dtype; ``llm_int8_threshold``: int8's outlier
    threshold (None: bitsandbytes' default). ``nf4-not-passed`` builds the BitsAndBytesConfig
    like the seed and, like the seed, does not pass it. ``local_files_only`` follows the
    cell's Hub switch (module docstring).
    """
    kwargs: dict[str, Any] = {
        "dtype": _torch_dtype(dtype),
        "attn_implementation": attn_implementation,
        "device_map": device_map,
        "local_files_only": hub_offline(),
    }
    config = build_bnb_config(quant, compute_dtype, llm_int8_threshold)
    if config is not None and passes_config(quant):
        kwargs["quantization_config"] = config
    torchao_config = build_torchao_config(quant)  # fp8 / fp8-dyn: quantized on load
    if torchao_config is not None:
        kwargs["quantization_config"] = torchao_config
    return kwargs


def describe_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe rendering of from_pretrained arguments."""
    described: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "quantization_config":
            described[key] = value.to_dict()
        elif key == "config":  # a loading_config: only its quantization_config was changed
            described[key] = {"quantization_config": value.quantization_config}
        elif isinstance(value, (str, int, float, bool, type(None), dict, list)):
            described[key] = value
        else:
            described[key] = str(value).removeprefix("torch.")
    return described


LOAD_TIME_BNB_KEYS = ("bnb_4bit_compute_dtype", "llm_int8_threshold")
"""BitsAndBytesConfig entries that bitsandbytes applies when it builds the layers, not when
it quantizes the weights: a serialized checkpoint stores them in its config.json, and
transformers 5.17 loads a checkpoint that has a quantization_config with *that* config,
ignoring the one passed (``AutoHfQuantizer.merge_quantization_configs`` overrides loading
attributes only for GPTQ/AWQ-like configs, not for BitsAndBytesConfig)."""


def loading_config(checkpoint: str, quantization_config: Any) -> Any | None:
    """The config of a pre-quantized bitsandbytes checkpoint folder with the cell's load-time
    settings (:data:`LOAD_TIME_BNB_KEYS`) in its quantization_config, to pass as
    ``config=``; None when ``checkpoint`` is not a local folder whose config.json has a
    quantization_config (nothing to override). Raises what reading the config raises."""
    config_path = Path(checkpoint) / "config.json"
    if quantization_config is None or not config_path.is_file():
        return None
    if "quantization_config" not in read_config_file(config_path):
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint, local_files_only=True)
    saved = config.quantization_config
    saved = dict(saved) if isinstance(saved, Mapping) else saved.to_dict()
    passed = quantization_config.to_dict()
    config.quantization_config = {**saved, **{k: passed[k] for k in LOAD_TIME_BNB_KEYS}}
    return config


_LAYER = re.compile(r"^(.*\.layers)\.(\d+)(\..*)?$")


def placement(model: Any) -> dict[str, Any]:
    """Where the model's parameters live: bytes per device and module ranges per device."""
    bytes_per_device: dict[str, int] = defaultdict(int)
    for parameter in model.parameters():
        for tensor in stored_tensors(parameter):  # a Float8Tensor's qdata and scale
            bytes_per_device[str(parameter.device)] += tensor.numel() * tensor.element_size()
    device_map = getattr(model, "hf_device_map", None)
    modules: dict[str, list[str]] = defaultdict(list)
    if device_map:
        layers: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for name, device in device_map.items():
            where = f"cuda:{device}" if isinstance(device, int) else str(device)
            match = _LAYER.match(name)
            if match and not match.group(3):
                layers[where][match.group(1)].append(int(match.group(2)))
            else:
                modules[where].append(name or "<whole model>")
        for where, prefixes in layers.items():
            for prefix, indices in prefixes.items():
                modules[where].append(f"{prefix}.{min(indices)}-{max(indices)}")
    return {
        "parameter_bytes_per_device": dict(sorted(bytes_per_device.items())),
        "hf_device_map_modules": {k: sorted(v) for k, v in sorted(modules.items())} or None,
    }


def load(checkpoint: str, kwargs: Mapping[str, Any]) -> tuple[Any, float]:
    """Load through the real from_pretrained path; returns the model in eval mode and seconds.

    With local files only, a checkpoint that is neither a folder nor a hub id (looked up in the
    local Hub cache) raises FileNotFoundError naming it; from_pretrained would call it a
    malformed hub id."""
    from transformers import AutoModelForCausalLM

    local = Path(checkpoint).is_dir() or HUB_ID.match(checkpoint)
    if kwargs.get("local_files_only") and not local:
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r} is not a local folder, and this cell runs with the "
            "Hugging Face Hub off (HF_HUB_OFFLINE=1; a model entry downloads only with "
            "allow_download: true)"
        )
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)
    model.eval()
    return model, time.perf_counter() - started
