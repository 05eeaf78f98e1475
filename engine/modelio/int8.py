"""Int8 weight-only quantization with per-output-channel scales, bf16 activations.

Why this method (measured on SmolLM2-135M, see README): PyTorch's dynamic int8 also quantizes the
activations with one scale per tensor, and this model's activations have outlier channels, so
perplexity goes from 27 to 73-87 even with per-channel weight scales. Quantizing only the weights,
one scale per output row, keeps perplexity within about 1%. Decoding on a CPU is bound by memory
bandwidth, so int8 weights (a quarter of fp32) fed to `aten._weight_int8pack_mm` (the fused
dequantize-and-multiply kernel torchao's int8 weight-only mode lowers to) decode faster than fp32
and about as fast as bf16 in eager mode. The kernel is fast for bf16 activations only (with fp32
activations it was 8x slower than fp32 here), hence bf16 everywhere else.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

QMAX = 127
ACTIVATION_DTYPE = torch.bfloat16


def _quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row (output channel): the outlier rows get their own."""
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp(min=1e-8) / QMAX
    quantized = torch.round(weight / scales[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return quantized.contiguous(), scales.to(ACTIVATION_DTYPE)


# A transformers PreTrainedModel (get_input_embeddings and friends); Any keeps mypy away from
# transformers' own types, which nn.Module's __getattr__ would otherwise answer as Tensor | Module.
PretrainedModel = Any
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class Int8Linear(nn.Module):
    """y = x @ (qweight * scales).T (+ bias), without materializing the dequantized weight."""

    qweight: torch.Tensor  # buffers, registered in __init__
    scales: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=ACTIVATION_DTYPE))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=ACTIVATION_DTYPE)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        module = cls(linear.in_features, linear.out_features, linear.bias is not None)
        module.qweight, module.scales = _quantize_rows(linear.weight)
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().to(ACTIVATION_DTYPE))
        return module

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        leading = hidden.shape[:-1]
        flat = hidden.reshape(-1, self.in_features).to(ACTIVATION_DTYPE)
        scales = self.scales.to(ACTIVATION_DTYPE)  # a no-op unless someone cast the model
        try:
            output = torch._weight_int8pack_mm(flat, self.qweight, scales)
        except (RuntimeError, NotImplementedError):  # a device without the fused kernel
            output = nn.functional.linear(flat, self.qweight.to(ACTIVATION_DTYPE) * scales[:, None])
        if self.bias is not None:
            output = output + self.bias.to(ACTIVATION_DTYPE)
        return output.reshape(*leading, self.out_features).to(hidden.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows; with tied weights the lm_head shares it."""

    qweight: torch.Tensor  # buffers, registered in __init__
    scales: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(num_embeddings, dtype=ACTIVATION_DTYPE))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "Int8Embedding":
        module = cls(embedding.num_embeddings, embedding.embedding_dim)
        module.qweight, module.scales = _quantize_rows(embedding.weight)
        return module

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        scales = self.scales[token_ids].unsqueeze(-1)
        return self.qweight[token_ids].to(scales.dtype) * scales


def _set_submodule(model: PretrainedModel, name: str, module: nn.Module) -> None:
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child_name, module)


def _of_type(model: PretrainedModel, name: str, kind: type[ModuleT]) -> ModuleT:
    module = model.get_submodule(name)
    if not isinstance(module, kind):
        raise TypeError(f"{name} is a {type(module).__name__}, not a {kind.__name__}")
    return module


def _is_tied(model: PretrainedModel) -> bool:
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    return (head is not None and embedding is not None
            and head.weight.data_ptr() == embedding.weight.data_ptr())


def quantize_int8(model: PretrainedModel, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Swap every nn.Linear (and the embedding table) for int8, in place, except names containing
    a `keep` substring. Returns the storage marker that `build_int8_shell` rebuilds from."""
    model.to(ACTIVATION_DTYPE)
    tied = _is_tied(model)
    embedding_name = _module_name(model, model.get_input_embeddings())
    head_name = _module_name(model, model.get_output_embeddings())
    quantize_embedding = tied and not any(k in head_name or k in embedding_name for k in keep)
    linear_names = [name for name, module in model.named_modules()
                    if isinstance(module, nn.Linear) and not any(k in name for k in keep)
                    and not (tied and name == head_name)]
    for name in linear_names:
        _set_submodule(model, name, Int8Linear.from_linear(_of_type(model, name, nn.Linear)))
    if quantize_embedding:
        _set_submodule(model, embedding_name,
                       Int8Embedding.from_embedding(model.get_input_embeddings()))
        _tie_int8_head(model, embedding_name, head_name)
    return {"format": "int8-weight-only-per-channel", "linear_modules": linear_names,
            "embedding": embedding_name if quantize_embedding else None,
            "tied_head": head_name if quantize_embedding else None}


def _module_name(model: PretrainedModel, target: nn.Module | None) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    return ""


def _tie_int8_head(model: PretrainedModel, embedding_name: str, head_name: str) -> None:
    embedding = _of_type(model, embedding_name, Int8Embedding)
    head = Int8Linear(embedding.embedding_dim, embedding.num_embeddings)
    head.qweight, head.scales = embedding.qweight, embedding.scales  # shared storage, not a copy
    _set_submodule(model, head_name, head)


def build_int8_shell(model: PretrainedModel, marker: dict[str, Any]) -> None:
    """Replace modules named in `marker` with empty int8 modules, ready for load_state_dict."""
    model.to(ACTIVATION_DTYPE)
    for name in marker["linear_modules"]:
        linear = _of_type(model, name, nn.Linear)
        _set_submodule(model, name, Int8Linear(linear.in_features, linear.out_features,
                                               linear.bias is not None))
    if marker.get("embedding"):
        embedding = _of_type(model, marker["embedding"], nn.Embedding)
        _set_submodule(model, marker["embedding"],
                       Int8Embedding(embedding.num_embeddings, embedding.embedding_dim))


def retie_after_load(model: PretrainedModel, marker: dict[str, Any]) -> None:
    if marker.get("embedding") and marker.get("tied_head"):
        _tie_int8_head(model, marker["embedding"], marker["tied_head"])
