"""Work counted from the model config: prefill FLOPs, decode bytes, and their rates vs peak.

Conventions (recorded with every result):
- FLOPs count 2 per multiply-add of the matrix products: the linear layers (q, k, v, o, the
  gated MLP, lm_head over every prompt position, as the seed's forward computes them) and
  attention (QK^T and PV) over the causal half only (the useful work; eager and math kernels
  compute the full square, so their MFU under this count is lower than their raw utilisation).
  Norms, rotary, softmax and activations are left out (under 1 %).
  Where the loaded model is at hand (``Shape.linear_params_counted``), the linear layers are
  counted from its modules rather than from the config: every ``nn.Linear`` (in x out), and a
  mixture-of-experts layer's 3-D expert weights at ``num_experts_per_tok / num_experts`` of
  their size (each token passes through exactly top-k experts, whichever they are) - exact
  for any family (OPT's two-matrix MLP, Phi-3's fused projections, MoE).
- Decode bytes per step: every weight byte once (quantized weights at their stored size,
  embedding table excluded unless tied to lm_head) plus the K and V cache read for the whole
  context - at most ``sliding_window`` tokens in a sliding-window layer, which is all the
  cache keeps there - and written for the new token. Activations are left out (small at
  decode).
MFU = achieved FLOP/s ÷ peak dense tensor FLOP/s of the compute dtype; MBU = achieved bytes/s ÷
peak memory bandwidth. Peaks are datasheet figures (source recorded); unknown GPUs get None.
Where the cell measured its device (``roofline.Roofline``), the same ratios against the
measured copy bandwidth and bf16 matmul rate are given too (``*_measured``), and the decode
floor: one step's bytes ÷ the measured bandwidth (ms), the fastest a step can be when it
must read those bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class DevicePeak:
    """Datasheet peaks of one GPU model: dense FLOP/s per compute dtype and memory bandwidth."""

    match: str
    bf16_flops: float
    fp32_flops: float
    memory_bandwidth_bytes_s: float
    source: str


# Dense (no sparsity) figures. Matched against torch's device name, first match wins.
DEVICE_PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak("H100 NVL", 835e12, 60e12, 3.9e12, "NVIDIA H100 NVL datasheet (dense)"),
    DevicePeak("H100 PCIe", 756e12, 51e12, 2.0e12, "NVIDIA H100 PCIe datasheet (dense)"),
    DevicePeak("H100", 989.4e12, 66.9e12, 3.35e12, "NVIDIA H100 SXM5 datasheet (dense)"),
    DevicePeak("H200", 989.4e12, 66.9e12, 4.8e12, "NVIDIA H200 SXM datasheet (dense)"),
    DevicePeak("A100-SXM4-80GB", 312e12, 19.5e12, 2.039e12, "NVIDIA A100 datasheet (dense)"),
    DevicePeak("A100-SXM4-40GB", 312e12, 19.5e12, 1.555e12, "NVIDIA A100 datasheet (dense)"),
    DevicePeak("A100 80GB PCIe", 312e12, 19.5e12, 1.935e12, "NVIDIA A100 datasheet (dense)"),
    DevicePeak("L40S", 362e12, 91.6e12, 0.864e12, "NVIDIA L40S datasheet (dense)"),
)


def device_peak(device_name: str | None) -> DevicePeak | None:
    """Datasheet peaks for a device name as torch reports it, or None if unknown."""
    if not device_name:
        return None
    for peak in DEVICE_PEAKS:
        if peak.match in device_name:
            return peak
    return None


WINDOW_OFF_BY_DEFAULT = frozenset(
    {"qwen2", "qwen2_moe", "qwen2_5_omni", "qwen3", "qwen3_moe", "smollm3", "deepseek_ocr2"}
)
"""``model_type``s whose transformers config class defaults ``use_sliding_window`` to false
(``use_sliding_window: bool = False`` in ``configuration_<type>.py``, transformers 5.17): their
config.json's ``sliding_window`` is ignored unless ``use_sliding_window`` is true."""


DEFAULT_SLIDING_WINDOW = {"mistral": 4096, "gemma2": 4096}
"""The window transformers' config class gives a config.json with no ``sliding_window`` key
at all (``sliding_window: int | None = 4096`` in ``configuration_mistral.py`` and
``configuration_gemma2.py``, transformers 5.17); a ``null`` key means no window. Other model
types are read as having none then (the hand replay covers Mistral, Llama and Qwen2 only)."""


def config_sliding_window(config: Mapping[str, Any]) -> int | None:
    """The sliding window (tokens) a transformers config.json dict uses, or None: none when
    ``sliding_window`` is null, when ``use_sliding_window`` is false (Qwen-style configs
    carry a window they do not use), and for a :data:`WINDOW_OFF_BY_DEFAULT` model type
    without ``use_sliding_window``; a missing key reads as :data:`DEFAULT_SLIDING_WINDOW`.
    The same for a raw config.json and ``to_dict()``."""
    if "sliding_window" in config:
        window = config["sliding_window"] or None
    else:
        window = DEFAULT_SLIDING_WINDOW.get(config.get("model_type", ""))
    use = config.get("use_sliding_window")
    if use is False or (use is None and config.get("model_type") in WINDOW_OFF_BY_DEFAULT):
        return None
    return int(window) if window is not None else None


@dataclass(frozen=True)
class Shape:
    """The dimensions of a decoder-only transformer that set its work and memory."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    linear_params_counted: int | None = None
    """Matrix-product weights per token counted from the loaded model (module docstring);
    None: the Llama-style count from the config (q, k, v, o, gated MLP, lm_head)."""
    sliding_window: int | None = None
    """Tokens a sliding-window layer keeps in its KV cache; None: no window."""
    windowed_layers: int = 0
    """How many of ``num_layers`` have that window."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, counted: int | None = None) -> Shape:
        """Read the shape from a transformers config.json dict (``to_dict()`` form).

        ``counted``: the linear weights counted from the loaded model; with it a config
        without ``intermediate_size`` (OPT's ``ffn_dim``) is read too (its
        ``intermediate_size`` is then 0, unused). Windows: ``layer_types`` names the
        ``sliding_attention`` layers where the config has it, else every layer is windowed
        when :func:`config_sliding_window` finds a window. Raises
        KeyError for a missing key it needs."""
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        layers = int(config["num_hidden_layers"])
        window = config_sliding_window(config)
        layer_types = config.get("layer_types")
        if window is None:
            windowed = 0
        elif layer_types:
            windowed = sum(t == "sliding_attention" for t in layer_types)
        else:
            windowed = layers
        if counted is None:
            intermediate = int(config["intermediate_size"])
        else:
            intermediate = int(config.get("intermediate_size") or 0)
        return cls(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            linear_params_counted=counted,
            sliding_window=window if windowed else None,
            windowed_layers=windowed,
        )

    @property
    def layer_linear_params(self) -> int:
        """Weights of one decoder layer's matrix products (q, k, v, o, gate, up, down)."""
        q_out = self.num_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        attention = self.hidden_size * (q_out + 2 * kv_out) + q_out * self.hidden_size
        return attention + 3 * self.hidden_size * self.intermediate_size

    @property
    def linear_params(self) -> int:
        """All matrix-product weights per token: every layer plus lm_head (counted from the
        model where ``linear_params_counted`` is set)."""
        if self.linear_params_counted is not None:
            return self.linear_params_counted
        return self.num_layers * self.layer_linear_params + self.hidden_size * self.vocab_size

    def kv_bytes_per_token(self, kv_dtype_bytes: int) -> int:
        """K and V cache bytes per token of context, over all layers (windows ignored)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * kv_dtype_bytes

    def kv_bytes(self, tokens: int, kv_dtype_bytes: int) -> int:
        """K and V cache bytes of one sequence of ``tokens``, a windowed layer holding at most
        ``sliding_window`` of them."""
        per_layer_token = 2 * self.num_kv_heads * self.head_dim * kv_dtype_bytes
        full = self.num_layers - self.windowed_layers
        windowed = min(tokens, self.sliding_window or tokens)
        return per_layer_token * (full * tokens + self.windowed_layers * windowed)


def _attended_pairs(shape: Shape, seq: int) -> float:
    """Query-key pairs of a causal prefill over ``seq`` tokens, summed over layers: ``seq^2/2``
    in a full layer; in a sliding-window layer of window ``w < seq``, ``w^2/2 + (seq - w) w``."""
    full = shape.num_layers - shape.windowed_layers
    w = shape.sliding_window or seq
    windowed = seq * seq / 2 if seq <= w else w * w / 2 + (seq - w) * w
    return full * seq * seq / 2 + shape.windowed_layers * windowed


def prefill_flops(shape: Shape, batch: int, seq: int) -> float:
    """FLOPs of one prefill forward (see module conventions)."""
    linear = 2.0 * batch * seq * shape.linear_params
    # QK^T and PV: 2 products x 2 FLOPs x head_dim per head per attended pair (causal half).
    attention = 4.0 * batch * shape.num_heads * shape.head_dim * _attended_pairs(shape, seq)
    return linear + attention


def decode_step_flops(shape: Shape, batch: int, context: int) -> float:
    """FLOPs of one decode step with ``context`` tokens already in the cache (a windowed layer
    attends to at most ``sliding_window`` of them)."""
    linear = 2.0 * batch * shape.linear_params
    full = shape.num_layers - shape.windowed_layers
    attended = full * (context + 1) + shape.windowed_layers * min(
        context + 1, shape.sliding_window or context + 1
    )
    attention = 4.0 * batch * shape.num_heads * shape.head_dim * attended
    return linear + attention


def decode_step_bytes(
    shape: Shape, batch: int, context: int, weight_bytes: int, kv_dtype_bytes: int
) -> float:
    """Bytes one decode step must move: weights once, KV cache read and the new KV written."""
    return float(weight_bytes + batch * shape.kv_bytes(context + 1, kv_dtype_bytes))


@dataclass(frozen=True)
class Efficiency:
    """Achieved rates and their ratio to the device's peak."""

    prefill_flops: float
    prefill_tflops_per_s: float | None
    mfu: float | None
    decode_bytes_per_step: float
    decode_flops_per_step: float
    decode_gb_per_s: float | None
    mbu: float | None
    peak_flops: float | None
    peak_memory_bandwidth_bytes_s: float | None
    peak_source: str | None
    conventions: str
    measured_copy_bandwidth_bytes_s: float | None = None
    measured_bf16_matmul_flops: float | None = None
    decode_floor_ms: float | None = None
    """Decode bytes per step ÷ measured copy bandwidth (ms)."""
    mbu_measured: float | None = None
    mfu_measured: float | None = None
    """Against the measured bf16 matmul rate (None for float32 compute)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def efficiency(
    shape: Shape,
    *,
    batch: int,
    seq: int,
    compute_dtype: str,
    kv_dtype: str,
    weight_bytes_read_per_step: int,
    prefill_ms: float | None,
    decode_ms_per_step: float | None,
    decode_tokens: int,
    device_name: str | None,
    n_devices: int,
    measured: Mapping[str, Any] | None = None,
    assumption: str | None = None,
) -> Efficiency:
    """MFU of prefill and MBU of decode for one cell.

    ``decode_ms_per_step`` is the median step; the step's bytes are taken at the middle of the
    decoded context. With several devices (a model split by device_map, which runs layers one
    after another), the peak is that of one device: the devices do not work at the same time.
    ``assumption``: what the byte count assumed beyond the conventions (e.g. a mixture of
    experts' routing), appended to ``conventions``.
    """
    peak = device_peak(device_name)
    peak_flops = None
    if peak is not None:
        peak_flops = peak.fp32_flops if compute_dtype == "float32" else peak.bf16_flops
    flops = prefill_flops(shape, batch, seq)
    middle_context = seq + decode_tokens // 2
    step_bytes = decode_step_bytes(
        shape, batch, middle_context, weight_bytes_read_per_step, DTYPE_BYTES[kv_dtype]
    )
    step_flops = decode_step_flops(shape, batch, middle_context)
    tflops = None if not prefill_ms else flops / (prefill_ms / 1000.0) / 1e12
    gbps = None if not decode_ms_per_step else step_bytes / (decode_ms_per_step / 1000.0) / 1e9
    measured = measured or {}
    bandwidth = measured.get("copy_bandwidth_bytes_s")
    matmul = measured.get("bf16_matmul_flops") if compute_dtype != "float32" else None
    return Efficiency(
        prefill_flops=flops,
        prefill_tflops_per_s=tflops,
        mfu=None if tflops is None or peak_flops is None else tflops * 1e12 / peak_flops,
        decode_bytes_per_step=step_bytes,
        decode_flops_per_step=step_flops,
        decode_gb_per_s=gbps,
        mbu=None if gbps is None or peak is None else gbps * 1e9 / peak.memory_bandwidth_bytes_s,
        peak_flops=peak_flops,
        peak_memory_bandwidth_bytes_s=None if peak is None else peak.memory_bandwidth_bytes_s,
        peak_source=None if peak is None else peak.source,
        conventions=(
            "FLOPs: 2/MAC over linear layers incl. lm_head on all prompt positions and causal "
            "half of attention; decode bytes: weights once + KV cache read/write; "
            f"n_devices={n_devices}, peak of one device"
            + ("" if assumption is None else f"; {assumption}")
        ),
        measured_copy_bandwidth_bytes_s=bandwidth,
        measured_bf16_matmul_flops=measured.get("bf16_matmul_flops"),
        decode_floor_ms=None if not bandwidth else step_bytes / bandwidth * 1000.0,
        mbu_measured=None if gbps is None or not bandwidth else gbps * 1e9 / bandwidth,
        mfu_measured=None if tflops is None or not matmul else tflops * 1e12 / matmul,
    )
