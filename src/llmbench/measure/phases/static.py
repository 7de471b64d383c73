"""Decode through a preallocated ``StaticCache``: eager steps, or one step as a CUDA graph.

Owns: ``StaticGeneration`` (decode_mode ``static`` and ``graph``), ``CaptureUnsupported`` and
``logits_agree`` (the truth check of a graph against eager steps).
May import: nothing of llmbench (torch and transformers come in through the model).

Why the step looks the way it does (transformers 5.17, ``masking_utils`` and
``cache_utils.StaticLayer``):

- A ``StaticCache`` holds ``max_cache_len`` positions per layer from the prefill on; its
  write position (``StaticLayer.cumulative_length``) is a device tensor advanced in place, and
  the model derives ``position_ids`` from it on the device, so one captured step replays at
  every position.
- The step passes a 2-D ``attention_mask`` of fixed shape ``(batch, max_cache_len)``, one for
  every written position. Without it, sdpa at a one-token query skips the mask
  (``_ignore_causal_mask_sdpa``) and attends to the cache's unwritten zero rows, while under
  stream capture (``is_tracing``) it builds the mask: eager and graph steps would compute
  different things. The mask's next position is set inside the step (``index_fill_`` at the
  write position), so the graph advances it too.
- The prefill passes the first ``seq`` columns of that mask (a view), as ``generate`` passes
  its 2-D mask of the prompt's length: sdpa keeps ``is_causal`` there.
"""

from __future__ import annotations

import time
from typing import Any


class CaptureUnsupported(NotImplementedError):
    """A decode step that cannot be captured as a CUDA graph (the cell is ``unsupported``:
    ``failures.classify`` maps NotImplementedError there).

    Carries the reason: the first error CUDA or the model raised during capture. Running out
    of memory during capture is not this: it propagates as the OutOfMemoryError it is.
    """


class StaticGeneration:
    """Greedy generation through a ``StaticCache`` of ``prompt + max_new_tokens`` positions.

    ``prefill()`` then ``step()`` as ``phases.generation.Generation``; ``capture()`` turns
    ``step`` into the replay of one captured CUDA graph (CUDA only). ``last_logits`` holds
    the last step's float32 logits ``(batch, vocab)`` when ``keep_logits`` is set.
    """

    def __init__(
        self,
        model: Any,
        input_ids: Any,
        prefill_kwargs: dict[str, Any],
        max_new_tokens: int,
        keep_logits: bool = False,
    ) -> None:
        import torch
        from transformers import StaticCache

        self.torch = torch
        self.model = model
        self.input_ids = input_ids
        self.prefill_kwargs = prefill_kwargs
        batch, seq = input_ids.shape
        self.max_cache_len = seq + max_new_tokens
        self.cache = StaticCache(config=model.config, max_cache_len=self.max_cache_len)
        self.mask = torch.zeros(
            (batch, self.max_cache_len), dtype=torch.long, device=input_ids.device
        )
        self.mask[:, :seq] = 1
        self.token = torch.zeros((batch, 1), dtype=input_ids.dtype, device=input_ids.device)
        self.keep_logits = keep_logits
        self.last_logits: Any = None
        self.graph: Any = None
        self.capture_s: float | None = None

    def _advance(self, outputs: Any) -> None:
        logits = outputs.logits[:, -1, :]
        self.token.copy_(logits.argmax(dim=-1, keepdim=True))
        if self.keep_logits:
            if self.last_logits is None:
                self.last_logits = logits.float().clone()
            else:
                self.last_logits.copy_(logits)

    def prefill(self) -> None:
        """Run the prompt into the static cache; pick the first new token."""
        seq = self.input_ids.shape[1]
        self._advance(
            self.model(
                input_ids=self.input_ids,
                attention_mask=self.mask[:, :seq],
                past_key_values=self.cache,
                use_cache=True,
                **self.prefill_kwargs,
            )
        )

    def eager_step(self) -> None:
        """Decode one token per sequence with eager launches, captured or not: mark the write
        position in the mask, run the model on the last token, pick the next."""
        position = self.cache.layers[0].cumulative_length.reshape(1)
        self.mask.index_fill_(1, position, 1)
        self._advance(
            self.model(
                input_ids=self.token,
                attention_mask=self.mask,
                past_key_values=self.cache,
                use_cache=True,
            )
        )

    def rewind(self, token: Any) -> None:
        """Undo the last step: every layer's write position back by one, that position
        masked again, the step's input ``token`` ``(batch, 1)`` restored. The keys and values
        it wrote stay, and are overwritten by the next step, which writes the same position."""
        for layer in self.cache.layers:
            layer.cumulative_length.sub_(1)
        self.mask.index_fill_(1, self.cache.layers[0].cumulative_length.reshape(1), 0)
        self.token.copy_(token)

    def step(self) -> None:
        """Decode one token per sequence: a graph replay once captured, else eager launches."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.eager_step()

    def capture(self, warmup_steps: int) -> None:
        """Run ``warmup_steps`` eager steps on a side stream (at least one: lazy state such as
        cuBLAS handles is created outside the capture), then capture one step.

        The capture itself launches nothing, so the cache advances only on replays. Records
        ``capture_s`` (s, warm-up steps excluded). Raises CaptureUnsupported with the error
        that capture raised, and RuntimeError on the CPU.
        """
        torch = self.torch
        if self.input_ids.device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup_steps)):
                self.eager_step()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        began = time.perf_counter()
        try:
            with torch.cuda.graph(graph):
                self.eager_step()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any capture failure is the reason
            raise CaptureUnsupported(
                f"decode step not capturable as a CUDA graph: {_first_cause(exc)}"
            ) from exc
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - began
        self.graph = graph

    def kv_dtype(self) -> str | None:
        """dtype of the cached keys once the prefill has filled them."""
        keys = getattr(self.cache.layers[0], "keys", None)
        return None if keys is None else str(keys.dtype).removeprefix("torch.")


def _first_cause(exc: BaseException) -> str:
    """The innermost exception of ``exc``'s context chain, in one line: the error inside the
    captured step, not the "operation failed due to a previous error during capture" that
    ending the capture raises after it."""
    seen = [exc]
    while seen[-1].__context__ is not None and len(seen) < 8:
        seen.append(seen[-1].__context__)
    first = seen[-1]
    text = str(first).splitlines()[0] if str(first) else ""
    return f"{type(first).__name__}: {text}"


def max_rel_diff(reference: list[Any], candidate: list[Any]) -> tuple[float, float]:
    """(largest |difference|, largest |difference| over the step's largest |reference|
    logit) of two runs' per-step logits (float32 ``(batch, vocab)`` each). Raises ValueError
    for runs of different lengths or none."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"cannot compare {len(reference)} with {len(candidate)} steps")
    worst_abs = worst_rel = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        diff = float((ref - cand).abs().max())
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / (float(ref.abs().max()) or 1.0))
    return worst_abs, worst_rel


def token_mismatches(reference: list[Any], candidate: list[Any], margin: float) -> tuple[int, int]:
    """(greedy tokens that differ, those of them where the reference's best logit leads its
    second by more than ``margin``) over every step and sequence. Where two logits are within
    the kernels' own noise of each other, either token is a faithful greedy choice."""
    differ = decisive = 0
    for ref, cand in zip(reference, candidate, strict=True):
        top2 = ref.topk(2, dim=-1).values
        lead = top2[:, 0] - top2[:, 1]
        mismatch = ref.argmax(-1) != cand.argmax(-1)
        differ += int(mismatch.sum())
        decisive += int((mismatch & (lead > margin)).sum())
    return differ, decisive


def logits_agree(
    reference: list[Any], repeat: list[Any], candidate: list[Any], rel_tolerance: float
) -> dict[str, Any]:
    """The truth check of a graph decode: ``candidate`` (graph replays) against
    ``reference`` (eager static-cache steps from the same states, ``truth_steps``), with
    ``repeat`` (the same eager steps run again) measuring how far eager differs from itself.

    Tolerance: ``max(rel_tolerance, 2 x eager's own relative difference)`` of each step's
    largest reference logit. Passes when the largest difference is within it and no greedy
    token differs where the reference's lead over its second-best logit exceeds twice the
    largest absolute difference allowed (a near-tie may go either way). Returns the check
    record.
    """
    worst_abs, worst_rel = max_rel_diff(reference, candidate)
    repeat_abs, repeat_rel = max_rel_diff(reference, repeat)
    tolerance = max(rel_tolerance, 2.0 * repeat_rel)
    scale = max(float(ref.abs().max()) for ref in reference)
    margin = 2.0 * max(tolerance * scale, 2.0 * repeat_abs)
    differ, decisive = token_mismatches(reference, candidate, margin)
    passed = worst_rel <= tolerance and decisive == 0
    record: dict[str, Any] = {
        "passed": passed,
        "steps": len(reference),
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
        "eager_repeat_max_rel_diff": repeat_rel,
        "tolerance_rel": tolerance,
        "greedy_tokens_differ": differ,
        "greedy_tokens_differ_beyond_margin": decisive,
        "token_margin": margin,
    }
    if not passed:
        record["reason"] = (
            f"graph decode differs from eager static-cache decode: max relative logit "
            f"difference {worst_rel:.3g} (tolerance {tolerance:.3g}; eager against itself "
            f"{repeat_rel:.3g}); {decisive} greedy token(s) differ where eager's lead exceeds "
            f"{margin:.3g}"
        )
    return record


def truth_steps(generation: StaticGeneration, steps: int) -> dict[str, list[Any]]:
    """From each of ``steps`` successive cache states of a captured generation: one eager
    step, rewound; the same eager step again, rewound; then the graph replay, which the
    generation keeps. Each run's float32 logits ``(batch, vocab)`` on the host, by run name
    (``eager``, ``eager_repeat``, ``graph``).

    The three runs see the same cache and the same input token, so their difference is the
    kernels' alone: greedy decoding of a random-weight model amplifies any difference into
    other tokens within a few steps, so runs that each pick their own tokens cannot be
    compared.
    """
    runs: dict[str, list[Any]] = {"eager": [], "eager_repeat": [], "graph": []}
    for _ in range(steps):
        token = generation.token.clone()
        for name in ("eager", "eager_repeat"):
            generation.eager_step()
            runs[name].append(generation.last_logits.cpu())
            generation.rewind(token)
        generation.step()
        runs["graph"].append(generation.last_logits.cpu())
    return runs
