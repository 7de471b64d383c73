"""Replay of one ``model(input_ids)`` forward of a transformers 5.x Mistral/Llama/Qwen2
decoder: embedding, attention mask, rotary embedding, the resident state of the earlier
layers, the last decoder layer (norm, q/k/v, rotary, cache update, attention, o_proj, MLP),
the final norm and lm_head, allocation by allocation and in program order.

The peak of a forward is reached inside the last decoder layer (every earlier layer's K/V is
then resident) or at the logits; earlier layers are identical but hold less cache, so they are
not replayed.

Imports ``llmbench.predict.replay``, ``attention``, ``linear``, ``outliers`` and ``constants``.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbench.predict.attention import _attention, attention_path
from llmbench.predict.constants import granule
from llmbench.predict.linear import _linear
from llmbench.predict.outliers import int8_outlier_fraction
from llmbench.predict.replay import _Context, _Replay


def _rms_norm(r: _Replay, ctx: _Context, rows: int, term: str = "hidden_states") -> str:
    """``MistralRMSNorm``: ``x.to(float32)``, ``pow(2).mean``, ``x * rsqrt``, ``.to(dtype)``,
    ``weight * x``. In float32 the casts are no-ops."""
    width = ctx.arch.shape.hidden_size
    upcast = ctx.a != 4
    h32 = r.alloc("norm_scratch", rows * width * 4) if upcast else None
    square = r.alloc("norm_scratch", rows * width * 4)
    variance = r.alloc("norm_scratch", rows * 4)
    r.free(square)
    scaled = r.alloc("norm_scratch", rows * width * 4)
    r.free(h32, variance)
    down = r.alloc("norm_scratch", rows * width * ctx.a) if upcast else None
    out = r.alloc(term, rows * width * ctx.a)
    r.free(scaled, down)
    return out


def _rotary(r: _Replay, size: int, a: int) -> str:
    """``(t * cos) + (rotate_half(t) * sin)``: returns the rotated tensor's handle."""
    t_cos = r.alloc("attention_qkv", size * a)
    negated = r.alloc("attention_qkv", size * a / 2)
    rotated = r.alloc("attention_qkv", size * a)
    r.free(negated)
    t_sin = r.alloc("attention_qkv", size * a)
    r.free(rotated)
    out = r.alloc("attention_qkv", size * a)
    r.free(t_cos, t_sin)
    return out


@dataclass(frozen=True)
class _Step:
    """The sizes of one forward: ``q_len`` new tokens on ``past`` cached ones."""

    q_len: int
    past: int
    rows: int  # batch * q_len
    kv_len: int  # past + q_len
    hidden: int  # bytes of one residual-stream tensor: rows * hidden_size * dtype
    path: str  # attention kernel (attention_path)
    layer: str  # stage prefix of the replayed (last) decoder layer, "layer <n-1>"


@dataclass(frozen=True)
class _Inputs:
    """Handles of the tensors the model holds through every layer."""

    embeds: str
    position_ids: str
    mask: str | None
    cos: str
    sin: str


def _forward(
    r: _Replay,
    ctx: _Context,
    *,
    q_len: int,
    past: int,
    logits_positions: int,
) -> None:
    """Replay one ``model(input_ids)`` of ``q_len`` new tokens on ``past`` cached ones.

    Layers before the last are summarised by their resident K/V (and int8 outlier state);
    the last layer, the final norm and lm_head are replayed allocation by allocation. The
    DynamicCache (all layers) is left live, as the caller holds it.
    """
    s = ctx.arch.shape
    rows = ctx.cell.batch * q_len
    step = _Step(
        q_len=q_len,
        past=past,
        rows=rows,
        kv_len=past + q_len,
        hidden=rows * s.hidden_size * ctx.a,
        path=attention_path(ctx.cell, ctx.arch, q_len),
        layer=f"layer {s.num_layers - 1}",
    )
    inputs = _embed(r, ctx, step)
    layer_input = _earlier_layers(r, ctx, step, inputs.embeds)
    layer_out = _last_layer(r, ctx, step, layer_input, inputs.embeds)
    _lm_head(r, ctx, step, logits_positions, layer_out, inputs)


def _embed(r: _Replay, ctx: _Context, step: _Step) -> _Inputs:
    """The embedding output, position ids, eager's additive mask and rotary cos/sin."""
    b, a, q_len, kv_len = ctx.cell.batch, ctx.a, step.q_len, step.kv_len
    r.stage = "embedding"
    embeds = r.alloc("hidden_states", step.hidden)
    position_ids = r.alloc("inputs", q_len * 8)
    mask = None
    if step.path == "eager":
        r.stage = "attention mask"
        causal = r.alloc("attention_mask", q_len * kv_len)
        mask = r.alloc("attention_mask", b * q_len * kv_len * a)
        r.free(causal)
    cos, sin = _rotary_embedding(r, ctx, q_len)
    return _Inputs(embeds=embeds, position_ids=position_ids, mask=mask, cos=cos, sin=sin)


def _rotary_embedding(r: _Replay, ctx: _Context, q_len: int) -> tuple[str, str]:
    """cos and sin ``(1, q_len, head_dim)``, made in float32 and cast to the model dtype."""
    head_dim, a = ctx.arch.shape.head_dim, ctx.a
    r.stage = "rotary embedding"
    freqs = r.alloc("rope", q_len * head_dim // 2 * 4)
    emb = r.alloc("rope", q_len * head_dim * 4)
    cos32 = r.alloc("rope", q_len * head_dim * 4)
    sin32 = r.alloc("rope", q_len * head_dim * 4)
    if a != 4:
        cos = r.alloc("rope", q_len * head_dim * a)
        sin = r.alloc("rope", q_len * head_dim * a)
        r.free(cos32, sin32)
    else:
        cos, sin = cos32, sin32
    r.free(freqs, emb)
    return cos, sin


def _earlier_layers(r: _Replay, ctx: _Context, step: _Step, embeds: str) -> str:
    """The resident state of layers 0..n-2; returns the last layer's input handle."""
    arch, s = ctx.arch, ctx.arch.shape
    # Earlier layers: their cache is resident (int8: their outlier state too).
    # Decode: every layer held `past` tokens; layers 0..n-2 have grown to kv_len already.
    kv_earlier = (s.num_layers - 1) * arch.kv_bytes(ctx.cell.batch, step.kv_len, ctx.a)
    r.alloc("kv_cache", kv_earlier, name="kv_earlier")
    if ctx.quant == "int8":
        n_out = round(int8_outlier_fraction(arch, step.rows, "down_proj") * s.intermediate_size)
        r.alloc("int8_outlier_state", (s.num_layers - 1) * granule(n_out * 8), name="idx_earlier")
    if s.num_layers > 1:
        return r.alloc("hidden_states", step.hidden)  # the previous layer's output
    return embeds


def _last_layer(r: _Replay, ctx: _Context, step: _Step, layer_input: str, embeds: str) -> str:
    """The last decoder layer: self-attention block, then MLP; returns its output handle."""
    residual, probs = _self_attention(r, ctx, step)
    down = _mlp(r, ctx, step)
    layer_out = r.alloc("hidden_states", step.hidden)
    r.free(down, residual, probs)
    if layer_input != embeds:
        r.free(layer_input)
    return layer_out


def _self_attention(r: _Replay, ctx: _Context, step: _Step) -> tuple[str, str | None]:
    """Input norm, q/k/v, rotary, cache update, attention, o_proj and the residual add;
    returns (residual, attention probabilities kept by the layer or None)."""
    s, a, rows = ctx.arch.shape, ctx.a, step.rows
    r.stage = f"{step.layer} input norm"
    normed = _rms_norm(r, ctx, rows)
    r.stage = f"{step.layer} q/k/v projections"
    q = _linear(r, ctx, rows, "q_proj", "attention_qkv")
    k = _linear(r, ctx, rows, "k_proj", "attention_qkv")
    v = _linear(r, ctx, rows, "v_proj", "attention_qkv")  # a bias is fused: no extra tensor
    r.stage = f"{step.layer} rotary"
    q_rot = _rotary(r, rows * s.num_heads * s.head_dim, a)
    k_rot = _rotary(r, rows * s.num_kv_heads * s.head_dim, a)
    r.free(q, k)
    _cache_update(r, ctx, step)
    r.free(k_rot, v)
    r.stage = f"{step.layer} attention ({step.path})"
    attn_out, probs = _attention(r, ctx, step.q_len, step.kv_len, step.path)
    r.free(q_rot)
    r.stage = f"{step.layer} o_proj"
    projected = _linear(r, ctx, rows, "o_proj", "attention_output")
    r.free(attn_out, normed)
    residual = r.alloc("hidden_states", step.hidden)
    r.free(projected)
    return residual, probs


def _cache_update(r: _Replay, ctx: _Context, step: _Step) -> None:
    """DynamicCache update of the last layer: K, then V, each ``torch.cat([old, new])`` while
    the old tensor is alive (decode), or a copy of the new one (prefill)."""
    s, b, a = ctx.arch.shape, ctx.cell.batch, ctx.a
    r.stage = f"{step.layer} cache update"
    half_kv_new = b * s.num_kv_heads * step.kv_len * s.head_dim * a
    half_kv_old = b * s.num_kv_heads * step.past * s.head_dim * a
    old_k = r.alloc("kv_cache_growth", half_kv_old) if step.past else None
    old_v = r.alloc("kv_cache_growth", half_kv_old) if step.past else None
    r.alloc("kv_cache", half_kv_new)  # torch.cat([old_k, k]) (prefill: a copy of k)
    r.free(old_k)
    r.alloc("kv_cache", half_kv_new)
    r.free(old_v)


def _mlp(r: _Replay, ctx: _Context, step: _Step) -> str:
    """Post-attention norm and the gated MLP ``down(silu(gate(x)) * up(x))``; returns the
    handle of down_proj's output."""
    rows, width = step.rows, ctx.arch.shape.intermediate_size
    r.stage = f"{step.layer} post-attention norm"
    normed2 = _rms_norm(r, ctx, rows)
    r.stage = f"{step.layer} MLP"
    gate = _linear(r, ctx, rows, "gate_proj", "mlp_activations")
    act = r.alloc("mlp_activations", rows * width * ctx.a)
    r.free(gate)
    up = _linear(r, ctx, rows, "up_proj", "mlp_activations")
    product = r.alloc("mlp_activations", rows * width * ctx.a)
    r.free(act, up)
    r.stage = f"{step.layer} down_proj"
    down = _linear(r, ctx, rows, "down_proj", "mlp_activations")
    r.free(product, normed2)
    return down


def _lm_head(
    r: _Replay, ctx: _Context, step: _Step, logits_positions: int, layer_out: str, inputs: _Inputs
) -> None:
    """Final norm, then the logits of the last ``logits_positions`` positions."""
    s, b, a = ctx.arch.shape, ctx.cell.batch, ctx.a
    r.stage = "final norm"
    last_hidden = _rms_norm(r, ctx, step.rows)
    r.free(layer_out, inputs.embeds, inputs.mask, inputs.cos, inputs.sin, inputs.position_ids)
    r.stage = "lm_head (logits)"
    sliced = None
    if logits_positions < step.q_len and b > 1:  # hidden[:, -k:, :] cannot be flattened as a view
        sliced = r.alloc("hidden_states", b * logits_positions * s.hidden_size * a)
    logits = r.alloc("logits", b * logits_positions * s.vocab_size * a)
    r.free(sliced, last_hidden)
    del logits  # returned to the caller, which drops it
