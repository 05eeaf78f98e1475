"""The model forward the scheduler runs each step: a fused path for Llama-family models, the
model's own (eager transformers) forward for everything else.

Why a fused path (measured on this project's 2-core CPU box with SmolLM2-135M bf16, one torch
thread; `bench/decode_step.py`): through transformers, a decode step at batch 8 spends ~40 ms in
`F.linear` (seven GEMMs per layer, weights re-laid-out by oneDNN on every call) and most of the
rest in attention, which repeats the key/value heads for grouped-query attention and runs SDPA's
flash kernel, slow for one query token (1.9 ms a layer at 200 cached tokens, against 0.26 ms when
the query heads of a key/value group are packed as that group's queries). This path:

- fuses q/k/v into one GEMM and gate/up into one (four GEMMs a layer instead of seven);
- on a CPU with AVX512-BF16, packs every fused weight once for modeldeck's own GEMMs
  (engine/serving/cpukernels.py; int8 versions stay int8): all linears of a step take 10.2 / 10.8 /
  16.5 ms (bf16) and 6.2 / 8.7 / 12.9 ms (int8) at 1 / 4 / 8 rows against 15.5 / 14.3 / 17.3 ms
  for oneDNN (`bench/cpu_gemm.py`); elsewhere prepacks them into oneDNN's blocked layout
  (`mkldnn._linear_pointwise`, the kernels Inductor's freezing pass and vLLM's CPU build use;
  ~36-43 ms through `F.linear`) or, for int8 weights, torch's int8 GEMM; on CUDA the fused
  weights go to cuBLAS (engine/serving/linears.py chooses);
- attends one-token queries per key/value group (no repeat), longer ones with SDPA's native
  grouped-query support; with modeldeck's kernels, pieces up to KERNEL_ATTENTION_TOKENS tokens
  attend through modeldeck's own attention kernel instead;
- flattens the tokens of all parts of a forward (each prompt being prefilled, the decode rows)
  into one matrix for every GEMM, with attention per part over its own cache slots;
- keeps the op count per layer low (rotary on queries and keys at once, `F.rms_norm`): at these
  sizes each dispatched op costs microseconds that add up to milliseconds a step; with modeldeck's
  kernels the glue between GEMMs (residual add + RMSNorm, rotary, SiLU-gated product, KV-cache
  writes) is one C call each (engine/serving/stepglue.py): ~2 ms off a 13 ms batch-1 decode step;
- on the CPU, runs each GEMM on every core and the rest of the step on the server's own thread
  count (`gemm_threads`), and measures while serving whether every core still helps
  (engine.serving.threads: a neighbour busy on one core stalls every multi-threaded GEMM).

A decode step (`bench/decode_step.py`'s scheduler): 14.1 / 16.1 / 19.2 ms at batch 1 / 4 / 8
with modeldeck's kernels (GEMMs and attention) against 27.0 / 22.5 / 26.7 with oneDNN and SDPA
in the same run (`MODELDECK_CPU_KERNELS=off`), and 50.0 / 56.5 / 62.5 ms eager; with the glue
kernels and the weights on 2 MB pages too, 11.4 / 11.7 / 13.4 ms (eager 48.7 / 55.1 / 62.8).
`torch.compile` over the whole step was measured too: 363 s of compilation on this box before the
first token, then 46/55/64 ms at batch 1/4/8, slower than this path, so it is not used. Any model this path does not recognise runs the eager forward (`EagerStep`); which one a
version got is reported in `status` and on /metrics (`engine_path`).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from engine.serving.kvcache import ForwardPart, SlotKVCache
from engine.serving.linears import FusedLinear
from engine.serving.stepglue import RmsNorm, choose_glue
from engine.serving.threads import GemmThreads

# The decoder block this path computes: pre-norm RMSNorm, rotary attention, SiLU-gated MLP.
FUSED_MODEL_TYPES = ("llama", "mistral", "qwen2")
# Query pieces up to this many tokens attend through modeldeck's kernel (a decode step, a short
# prompt), longer ones through SDPA's flash kernel, which wins once the score matrix is large.
KERNEL_ATTENTION_TOKENS = 64


class ModelStep(Protocol):
    """What the scheduler calls once per iteration: for each part of the forward (a prefill
    chunk, the decode rows), the next-token logits of its rows' last queries (rows, vocab)."""

    path: str    # "fused" or "eager": reported in status and on /metrics
    reason: str  # why this path (the kernel it runs, or why the fused one does not apply)

    def run(self, parts: list[ForwardPart], cache: SlotKVCache) -> list[Any]: ...


class EagerStep:
    """transformers' own forward over the slot cache: works for any decoder it can load."""

    def __init__(self, model: Any, reason: str) -> None:
        self.model = model
        self.path = "eager"
        self.reason = reason
        self.cache_keyword = cache_keyword(model)

    def run(self, parts: list[ForwardPart], cache: SlotKVCache) -> list[Any]:
        """One transformers forward per part (its rows must share one query length)."""
        logits = []
        for part in parts:
            cache.plan(part)
            output = self.model(input_ids=part.ids, attention_mask=part.mask,
                                position_ids=part.positions, use_cache=True, logits_to_keep=1,
                                **{self.cache_keyword: cache})
            logits.append(output.logits[:, -1, :])
        return logits


def cache_keyword(model: Any) -> str:
    """The name the model's forward takes its KV cache by: transformers 5.2x calls it `cache`,
    earlier 5.x releases (5.17 on the GPU image this was seen on) `past_key_values`. A forward
    with **kwargs swallows the wrong name without a word and attends to the new tokens alone,
    so a forward that names neither is refused here rather than served wrong."""
    parameters = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise ValueError(f"{type(model).__name__}.forward takes no KV cache (neither `cache` nor "
                     "`past_key_values`)")


def choose_step(model: Any, release_unfused: bool = False) -> ModelStep:
    """The fused step when the model is one it computes exactly, else the eager one (with why).
    release_unfused: drop the model's own copies of the fused weights (serving holds only the
    step; the model's eager forward no longer works afterwards)."""
    reason = unsupported_reason(model)
    if reason is not None:
        return EagerStep(model, reason)
    try:
        step = FusedLlamaStep(model)
    except (RuntimeError, ValueError) as error:  # a kernel this build or device lacks
        return EagerStep(model, f"fused path unavailable: {' '.join(str(error).split())[:120]}")
    if release_unfused:
        step.release_unfused_weights()
    return step


def unsupported_reason(model: Any) -> str | None:
    config = model.config
    model_type = getattr(config, "model_type", "")
    if model_type not in FUSED_MODEL_TYPES:
        return f"model type {model_type or 'unknown'} has no fused path"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act} has no fused path"
    if getattr(config, "use_sliding_window", False) or (
            model_type == "mistral" and getattr(config, "sliding_window", None)):
        return "sliding-window attention has no fused path"
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers or not hasattr(model, "lm_head"):
        return "the model's layout is not the Llama layout"
    return None


class _Layer:
    def __init__(self, layer: Any, threads: GemmThreads | None) -> None:
        attention, mlp = layer.self_attn, layer.mlp
        self.input_norm = RmsNorm(layer.input_layernorm)
        self.post_norm = RmsNorm(layer.post_attention_layernorm)
        self.qkv = FusedLinear([attention.q_proj, attention.k_proj, attention.v_proj], threads)
        self.o = FusedLinear([attention.o_proj], threads)
        self.gate_up = FusedLinear([mlp.gate_proj, mlp.up_proj], threads)
        self.down = FusedLinear([mlp.down_proj], threads)


class FusedLlamaStep:
    """The Llama block computed op by op with fused, prepacked GEMMs; numerically the model's
    own forward (the scheduler's logits test compares the two on a trained model)."""

    path = "fused"

    def __init__(self, model: Any) -> None:
        import torch

        config = model.config
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.head_dim ** -0.5
        most = gemm_threads(next(model.parameters()).device)
        self.threads = GemmThreads(most) if most else None
        with torch.inference_mode():
            self.layers = [_Layer(layer, self.threads) for layer in model.model.layers]
            self.head = FusedLinear([model.lm_head], self.threads)
        self.huge_pages = _on_huge_pages(self.layers, self.head)
        self.embed = model.get_input_embeddings()
        self.norm = RmsNorm(model.model.norm)
        self.rotary = model.model.rotary_emb
        half = self.head_dim // 2
        self.rotation_sign = torch.cat([-torch.ones(half), torch.ones(self.head_dim - half)]).to(
            next(model.parameters()).device)
        self.attention_kernel = _attention_kernel(model, self.heads // self.kv_heads,
                                                  self.head_dim)
        self.glue = choose_glue(model, self.head_dim)
        self._float_masks: dict[int, tuple[Any, Any]] = {}  # per run: each part's mask, fp32
        spread = f", {self.threads.describe()}" if self.threads else ""
        attention = ", modeldeck attention" if self.attention_kernel else ""
        attention += ", modeldeck norms and rotary" if self.glue.name == "modeldeck" else ""
        pages = ", weights on 2 MB pages" if self.huge_pages else ""
        self.reason = (f"Llama block, {_kernels(self.layers, self.head)}{pages}{attention}"
                       f"{spread}")

    def release_unfused_weights(self) -> None:
        """Free the per-projection weights the fused GEMMs copied (not a tied embedding)."""
        import torch

        embedding = self.embed.weight if hasattr(self.embed, "weight") else None
        for layer in self.model.model.layers:
            for module in (*_projections(layer), ):
                _release(module, torch)
        if getattr(self.model.lm_head, "weight", None) is not embedding:
            _release(self.model.lm_head, torch)

    def run(self, parts: list[ForwardPart], cache: SlotKVCache) -> list[Any]:
        """All parts in one pass: their tokens flattened into one (tokens, hidden) matrix for
        every GEMM (a prefill chunk and the decode rows read the weights once between them),
        attention per part over its own slots."""
        import torch

        shapes = [tuple(part.ids.shape) for part in parts]
        self._float_masks = {}
        hidden = self.embed(torch.cat([part.ids.reshape(-1) for part in parts]))
        positions = torch.cat([part.positions.reshape(-1) for part in parts])
        cos, sin = self.rotary(hidden[None], positions[None])
        # (tokens, 1, dim), over heads; sin's first half negated: see stepglue.TorchGlue.rotate.
        cos, sin = cos[0, :, None, :], sin[0, :, None, :] * self.rotation_sign.to(sin.dtype)
        if self.threads is not None:
            self.threads.begin_step(hidden.shape[0],
                                    prefill=any(length > 1 for _, length in shapes))
        # Each residual add is fused with the norm after it: the last one with the final
        # norm, which only the rows' last queries need but costs little on every row.
        hidden, normed = self.glue.add_norm(hidden, None, self.layers[0].input_norm)
        for index, layer in enumerate(self.layers):
            delta = self._attention(layer, normed, cos, sin, parts, shapes, cache, index)
            hidden, normed = self.glue.add_norm(hidden, delta, layer.post_norm)
            last = index + 1 == len(self.layers)
            following = self.norm if last else self.layers[index + 1].input_norm
            hidden, normed = self.glue.add_norm(hidden, self._mlp(layer, normed), following)
        # Each row's last query: the offset of each part's rows' ends in the flat tokens.
        ends, offset = [], 0
        for rows, length in shapes:
            ends.append(torch.arange(1, rows + 1, device=hidden.device) * length - 1 + offset)
            offset += rows * length
        logits = self.head(normed[torch.cat(ends)])
        if self.threads is not None:
            self.threads.end_step()
        return list(logits.split([rows for rows, _ in shapes]))

    def _attention(self, layer: _Layer, hidden: Any, cos: Any, sin: Any,
                   parts: list[ForwardPart], shapes: list[tuple[int, int]], cache: SlotKVCache,
                   index: int) -> Any:
        import torch

        tokens, rotated = hidden.shape[0], self.heads + self.kv_heads
        heads = layer.qkv(hidden).view(tokens, rotated + self.kv_heads, self.head_dim)
        query_key = self.glue.rotate(heads, rotated, cos, sin)  # queries and keys at once
        query, key = query_key[:, :self.heads], query_key[:, self.heads:]
        value = heads[:, rotated:]
        outputs, offset = [], 0
        for part, (rows, length) in zip(parts, shapes):
            piece = slice(offset, offset + rows * length)
            offset += rows * length
            keys, values = self.glue.write_read(cache, index, part, key[piece], value[piece])
            outputs.append(self._attend(query[piece].view(rows, length, self.heads, self.head_dim),
                                        keys, values, part.mask))
        return layer.o(torch.cat(outputs) if len(outputs) > 1 else outputs[0])

    def _attend(self, query: Any, keys: Any, values: Any, mask: Any) -> Any:
        """(rows, q, heads, dim) queries over (rows, kv_heads, kv, dim): (rows * q, heads * dim)."""
        import torch

        rows, length = query.shape[:2]
        if (self.attention_kernel is not None and length <= KERNEL_ATTENTION_TOKENS
                and keys.dtype == query.dtype == torch.bfloat16):
            return self.attention_kernel.attend(query, keys, values, self._float_mask(mask),
                                                self.scale,
                                                self.threads.active if self.threads is not None
                                                else torch.get_num_threads())
        attend = torch.nn.functional.scaled_dot_product_attention
        if length == 1:
            # One query token: a key/value head's query heads act as that head's queries.
            group = self.heads // self.kv_heads
            packed = query.reshape(rows, self.kv_heads, group, self.head_dim)
            output = attend(packed, keys, values, attn_mask=mask, scale=self.scale)
            return output.reshape(rows, self.heads * self.head_dim)
        output = attend(query.transpose(1, 2), keys, values, attn_mask=mask, scale=self.scale,
                        enable_gqa=self.kv_heads != self.heads)
        return output.transpose(1, 2).reshape(rows * length, self.heads * self.head_dim)

    def _float_mask(self, mask: Any) -> Any:
        """A part's (rows, 1, q, kv) additive mask as (rows, q, kv) fp32, once per run (every
        layer attends under the same mask)."""
        cached = self._float_masks.get(id(mask))
        if cached is None or cached[0] is not mask:
            cached = (mask, mask.reshape(mask.shape[0], -1, mask.shape[-1]).float().contiguous())
            self._float_masks[id(mask)] = cached
        return cached[1]

    def _mlp(self, layer: _Layer, hidden: Any) -> Any:
        return layer.down(self.glue.silu_mul(layer.gate_up(hidden), layer.gate_up.sizes))


def gemm_threads(device: Any) -> int | None:
    """On a CPU, the GEMMs run on every core this process may use, the rest of the step on the
    server's own thread count (one fewer: the HTTP front end's core). Measured on 2 cores with
    SmolLM2-135M bf16 (oneDNN prepacked): all linears of a step take 17 / 19 / 20 ms at batch
    1 / 4 / 8 on 2 threads against 28 / 24 / 31 ms on one, while the whole step on 2 threads
    was slower than on one (each small op pays a parallel region, and a front-end wake-up
    stalls the other thread at its barrier). None: nothing to change (a GPU, or no spare core)."""
    import os

    import torch

    if device.type != "cpu":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores if cores > torch.get_num_threads() else None


def _projections(layer: Any) -> tuple[Any, ...]:
    attention, mlp = layer.self_attn, layer.mlp
    return (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
            mlp.gate_proj, mlp.up_proj, mlp.down_proj)


def _attention_kernel(model: Any, group: int, head_dim: int) -> Any:
    """modeldeck's attention kernel (engine.serving.cpukernels) for a bf16 or int8 model on a CPU
    that runs it, else None (SDPA)."""
    import torch

    from engine.serving.cpukernels import load

    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype not in (torch.bfloat16, torch.int8):
        return None
    kernels, _ = load()
    return kernels if kernels is not None and kernels.attends(group, head_dim) else None


def _gemms(layers: list[_Layer], head: FusedLinear) -> list[FusedLinear]:
    return [head] + [gemm for layer in layers
                     for gemm in (layer.qkv, layer.o, layer.gate_up, layer.down)]


def _on_huge_pages(layers: list[_Layer], head: FusedLinear) -> bool:
    """The packed weights moved onto huge pages (engine.serving.cpukernels), where they are
    modeldeck's kernels' and the platform has them."""
    from engine.serving.cpukernels import place_on_huge_pages

    return place_on_huge_pages([gemm.packed for gemm in _gemms(layers, head) if gemm.packed])


def _kernels(layers: list[_Layer], head: FusedLinear) -> str:
    """Which kernels the step's GEMMs run, in words ("modeldeck int8 kernels", or a count where
    some shapes fell back)."""
    gemms = _gemms(layers, head)
    names = ["modeldeck " + gemm.kernel + " kernel" if gemm.kernel
             else "torch int8 GEMMs" if gemm.int8 is not None
             else "oneDNN prepacked" if gemm.onednn else "fused GEMMs" for gemm in gemms]
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    if len(counts) == 1:
        return names[0].replace("kernel", "kernels")
    return ", ".join(f"{name} ({count} of {len(names)} GEMMs)" for name, count in counts.items())


def _release(module: Any, torch: Any) -> None:
    for name in ("weight", "qweight"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
