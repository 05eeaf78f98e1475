"""One GEMM over several linears' stacked weights (q/k/v, gate/up), on the fastest kernel this
machine has for the version's weights, chosen once when the step is built:

- modeldeck's own kernels (engine/serving/cpukernels.py) on a CPU with AVX512-BF16, bf16 or int8,
  or with AVX2 (its AVX2 GEMMs, engine/data/cpu_kernels_avx2.c);
- int8 weights elsewhere (no AVX2, no C compiler, a shape off the kernels' blocks): torch's int8
  weight-only GEMM (`_weight_int8pack_mm`, the kernel the int8 format's own forward runs), the
  weights kept int8. Dequantizing them to bf16 instead was measured on a 2-core AVX2 EPYC (no
  AVX512): 2-4x slower at 8 rows for SmolLM2's shapes (gate/up 3072x576: 0.49 ms int8 against
  1.99 ms bf16; lm_head 49152x576: 10.0 against 26.0 ms), and it rounds every dequantized weight
  to bf16, which the version's own forward never does (the scheduler's logits test caught logits
  0.2 off on that machine);
- oneDNN's prepacked linear on a CPU whose torch build runs it for the dtype;
- plain `F.linear` (cuBLAS on a GPU).
"""

from __future__ import annotations

from typing import Any

from engine.serving.threads import GemmThreads

BATCH_HINT = 8  # oneDNN picks a blocking for this many rows; any row count still works


class FusedLinear:
    """One GEMM over several linears' weights stacked by rows (their outputs concatenated)."""

    def __init__(self, modules: list[Any], threads: GemmThreads | None = None) -> None:
        """threads: where this GEMM's thread count comes from (None: the caller's torch threads)."""
        import torch

        self.threads = threads
        self.base_threads = torch.get_num_threads()
        biases = [getattr(module, "bias", None) for module in modules]
        self.sizes = [_out_features(module) for module in modules]
        self.bias = (torch.cat([b if b is not None else torch.zeros(size, dtype=_dtype(module),
                                                                    device=_device(module))
                                for b, size, module in zip(biases, self.sizes, modules)])
                     if any(b is not None for b in biases) else None)
        self.packed = _packed(modules, self.bias)
        self.kernel = ("int8" if self.packed.int8 else "bf16") if self.packed else None
        # The rows stacked as one int8 linear (torch's int8 GEMM) where modeldeck's kernels
        # do not run
        self.int8: Any = _stacked_int8(modules, self.bias) if self.packed is None else None
        weight = None
        if self.packed is None and self.int8 is None:
            weights = [_dense_weight(module) for module in modules]
            weight = torch.cat(weights) if len(weights) > 1 else weights[0]
        self.onednn = (weight is not None and weight.device.type == "cpu"
                       and _onednn_usable(weight.dtype))
        self.weight: Any = (torch.ops.mkldnn._reorder_linear_weight(weight, BATCH_HINT)
                            if self.onednn else weight.contiguous() if weight is not None else None)

    def __call__(self, hidden: Any) -> Any:
        threads = self.threads.active if self.threads is not None else None
        if self.packed is not None:  # modeldeck's kernels take the thread count per call
            return self.packed(hidden, threads or self.base_threads)
        if threads is None:
            return self._multiply(hidden)
        import torch

        # ~0.1 us each. The count is process-wide: back to the server's own count, not to what
        # this thread saw, so two versions stepping at once (a rollout) cannot leave it raised.
        torch.set_num_threads(threads)
        try:
            return self._multiply(hidden)
        finally:
            torch.set_num_threads(self.base_threads)

    def _multiply(self, hidden: Any) -> Any:
        import torch

        if self.int8 is not None:
            return self.int8(hidden)
        if not self.onednn:
            return torch.nn.functional.linear(hidden, self.weight, self.bias)
        if hidden.dim() == 2:  # the step's flat (tokens, features): no reshape to dispatch
            return torch.ops.mkldnn._linear_pointwise(hidden, self.weight, self.bias, "none", [], "")
        flat = hidden.reshape(-1, hidden.shape[-1])
        output = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, "none", [], "")
        return output.view(*hidden.shape[:-1], output.shape[-1])


def _packed(modules: list[Any], bias: Any) -> Any:
    """The stacked weights in modeldeck's CPU kernel layout (engine.serving.cpukernels), kept int8
    when every module is an int8 one, or None where those kernels do not apply (a GPU, a CPU
    without AVX2, an fp32 model, a shape off the blocks): then torch's int8 GEMM, oneDNN or
    cuBLAS."""
    import torch

    from engine.serving.cpukernels import load_gemm

    int8 = all(hasattr(module, "qweight") for module in modules)
    if _device(modules[0]).type != "cpu" or (not int8 and _dtype(modules[0]) != torch.bfloat16):
        return None
    gemm, _ = load_gemm()
    in_features = (modules[0].qweight if int8 else modules[0].weight).shape[1]
    if gemm is None or not gemm.fits(sum(_out_features(m) for m in modules), in_features):
        return None
    if int8:
        return gemm.pack(torch.cat([m.qweight for m in modules]),
                         torch.cat([m.scales.float() for m in modules]), bias)
    return gemm.pack(torch.cat([m.weight.detach() for m in modules]), None, bias)


def _stacked_int8(modules: list[Any], bias: Any) -> Any:
    """Every module's int8 rows and scales stacked (copies: releasing the modules' own weights
    leaves these) into one Int8Linear, the int8 format's own forward; None where a module is not
    int8 or this device's torch has no int8 GEMM for these shapes (tried once, on one row of
    zeros: the format's forward would fall back to dequantizing on every call)."""
    import torch

    from engine.modelio.int8 import Int8Linear

    if not all(hasattr(module, "qweight") for module in modules):
        return None
    qweight = torch.cat([module.qweight for module in modules])
    scales = torch.cat([module.scales for module in modules])
    try:
        probe = torch.zeros(1, qweight.shape[1], dtype=scales.dtype, device=qweight.device)
        torch._weight_int8pack_mm(probe, qweight, scales)
    except (RuntimeError, NotImplementedError, AttributeError):
        return None
    with torch.device("meta"):  # its own zero buffers are replaced at once: allocate nothing
        stacked = Int8Linear(qweight.shape[1], qweight.shape[0])
    stacked.qweight, stacked.scales, stacked.bias = qweight, scales, bias
    return stacked


def _out_features(module: Any) -> int:
    return int((module.qweight if hasattr(module, "qweight") else module.weight).shape[0])


def _dtype(module: Any) -> Any:
    return module.scales.dtype if hasattr(module, "qweight") else module.weight.dtype


def _device(module: Any) -> Any:
    return (module.qweight if hasattr(module, "qweight") else module.weight).device


def _dense_weight(module: Any) -> Any:
    """A linear's weight as a dense (out, in) tensor; an int8 layer is dequantized once, so the
    step computes with exactly the weights the int8 version stores."""
    weight = getattr(module, "weight", None)
    if weight is not None:
        return weight.detach()
    scales = module.scales
    return (module.qweight.to(scales.dtype) * scales[:, None]).to(scales.dtype)


_ONEDNN_USABLE: dict[Any, bool] = {}


def _onednn_usable(dtype: Any) -> bool:
    """Whether this torch build packs and runs oneDNN linears for `dtype` (tried once)."""
    import torch

    if dtype not in _ONEDNN_USABLE:
        try:
            weight = torch.ones(4, 8, dtype=dtype)
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, 2)
            result = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 8, dtype=dtype), packed,
                                                        None, "none", [], "")
            _ONEDNN_USABLE[dtype] = bool(torch.allclose(result.float(), torch.full((2, 4), 8.0)))
        except (RuntimeError, AttributeError):
            _ONEDNN_USABLE[dtype] = False
    return _ONEDNN_USABLE[dtype]
