"""The fused step's glue between its GEMMs: residual adds with RMSNorm, rotary embedding, the
SiLU-gated product, the KV-cache writes. Two ways to run it, one interface (modelstep picks):

- `TorchGlue`: torch ops, any device and dtype (the fallback; the step's only path on a GPU);
- `KernelGlue`: modeldeck's C kernels (engine/data/cpu_kernels.c) on a CPU that runs them, for
  bf16 hidden states: one call where torch dispatches 3-6 small ops.

Why: at decode sizes each torch op costs microseconds of dispatch for nanoseconds of work, and
this glue is ~20 ops a layer. Measured here (SmolLM2-135M bf16, one thread): `F.rms_norm` and
its weight multiply took 14-17 us at 1-8 rows and 40 us at 9 rows, 61 of them a step; everything
but the GEMMs and attention came to 4.4 ms of a 12.8 ms batch-1 decode step and 5.3 ms of a
16.4 ms 9-token prefill. The kernels round where torch's bf16 ops round: on random inputs their
results matched torch's bit for bit (tests/serving/test_step_glue.py).

The kernel path adds residuals in place: `hidden` must be the step's own tensor (the embedding
lookup's output is), never a view of the model's weights.
"""

from __future__ import annotations

from typing import Any


class RmsNorm:
    """transformers' Llama RMSNorm in two ops instead of seven: `F.rms_norm` computes in fp32
    and rounds once to the input's dtype, then the weight multiplies in that dtype, exactly as
    transformers does. (Folding the weight into the next GEMM saves one more op but rounds
    differently: bf16 logits moved by up to 0.16 on the test model, so it is not done.)"""

    def __init__(self, module: Any) -> None:
        self.weight = module.weight
        self.epsilon = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)
        self.shape = (module.weight.shape[-1],)

    def __call__(self, hidden: Any) -> Any:
        import torch

        return self.weight * torch.nn.functional.rms_norm(hidden, self.shape, eps=self.epsilon)


class TorchGlue:
    """The glue as torch ops."""

    name = "torch"

    @staticmethod
    def add_norm(hidden: Any, delta: Any | None, norm: RmsNorm) -> tuple[Any, Any]:
        """(hidden + delta, norm of that sum); no delta: (hidden, its norm)."""
        if delta is not None:
            hidden = hidden + delta
        return hidden, norm(hidden)

    @staticmethod
    def rotate(heads: Any, count: int, cos: Any, sin: Any) -> Any:
        """The first `count` heads of heads (tokens, heads, dim) with the rotary embedding
        applied; cos, sin (tokens, 1, dim), sin's first half negated. transformers'
        rotate_half(x) is cat(-x2, x1); roll(x, half) is cat(x2, x1), hence the sign."""
        rotated = heads[:, :count]
        return rotated * cos + rotated.roll(heads.shape[-1] // 2, -1) * sin

    @staticmethod
    def write_read(cache: Any, layer: int, part: Any, key: Any, value: Any) -> tuple[Any, Any]:
        """A part's keys and values (its tokens, kv heads, dim) into its cache slots; the
        slots' (rows, kv heads, kv_len, dim) keys and values to attend over."""
        rows, length = part.ids.shape
        return cache.write_read(layer, part, _by_row(key, rows, length),
                                _by_row(value, rows, length))

    @staticmethod
    def silu_mul(gate_up: Any, sizes: list[int]) -> Any:
        import torch

        gate, up = gate_up.split(sizes, dim=-1)
        return torch.nn.functional.silu(gate) * up


class KernelGlue:
    """The glue through modeldeck's C kernels: bf16, CPU, contiguous rows."""

    name = "modeldeck"

    def __init__(self, kernels: Any) -> None:
        self.kernels = kernels

    def add_norm(self, hidden: Any, delta: Any | None, norm: RmsNorm) -> tuple[Any, Any]:
        """hidden += delta in place; (hidden, its norm)."""
        if delta is not None and not delta.is_contiguous():
            delta = delta.contiguous()
        return hidden, self.kernels.add_rms_norm(hidden, delta, norm.weight, norm.epsilon)

    def rotate(self, heads: Any, count: int, cos: Any, sin: Any) -> Any:
        """As TorchGlue.rotate, in place on `heads` (contiguous); returns the rotated heads."""
        self.kernels.rotate(heads, count, cos.reshape(cos.shape[0], -1).contiguous(),
                            sin.reshape(sin.shape[0], -1).contiguous())
        return heads[:, :count]

    def write_read(self, cache: Any, layer: int, part: Any, key: Any,
                   value: Any) -> tuple[Any, Any]:
        import torch

        keys, values = cache.keys[layer], cache.values[layer]
        if (keys.dtype != torch.bfloat16 or key.stride() != value.stride()
                or key.stride()[1:] != (key.shape[2], 1) or not keys.is_contiguous()):
            return TorchGlue.write_read(cache, layer, part, key, value)
        columns = part.write if part.write.dtype == torch.int64 else part.write.long()
        self.kernels.write_kv(keys, values, part.first, columns.contiguous(), key, value)
        return cache.read(layer, part)

    def silu_mul(self, gate_up: Any, sizes: list[int]) -> Any:
        if sizes[0] != sizes[1] or sizes[0] % 16 or not gate_up.is_contiguous():
            return TorchGlue.silu_mul(gate_up, sizes)
        return self.kernels.silu_mul(gate_up)


def _by_row(states: Any, rows: int, length: int) -> Any:
    """(rows * length, heads, dim) as (rows, heads, length, dim), the cache's order."""
    return states.view(rows, length, *states.shape[1:]).transpose(1, 2)


def choose_glue(model: Any, head_dim: int) -> TorchGlue | KernelGlue:
    """The kernels where they apply (a CPU model whose hidden states and norms are bf16, widths
    in whole 16-lane vectors, a head no wider than the kernels' 256), else torch ops."""
    import torch

    from engine.serving.cpukernels import load

    norms = [model.model.norm.weight] + [weight for layer in model.model.layers for weight in (
        layer.input_layernorm.weight, layer.post_attention_layernorm.weight)]
    device = norms[0].device
    with torch.inference_mode():  # what the step's hidden states will be (int8 tables too)
        hidden = model.get_input_embeddings()(torch.zeros(1, dtype=torch.long, device=device))
    if (device.type != "cpu" or hidden.dtype != torch.bfloat16
            or any(weight.dtype != torch.bfloat16 for weight in norms)
            or hidden.shape[-1] % 16 or head_dim > 256 or head_dim % 16):
        return TorchGlue()
    kernels, _ = load()
    return KernelGlue(kernels) if kernels is not None else TorchGlue()
