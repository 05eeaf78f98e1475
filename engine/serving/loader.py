"""Load a registry version for serving: safetensors or GGUF only, no remote code.

GGUF files are dequantized by transformers on every load, which is slow, so the first load
converts them once into a safetensors directory under the deck home's cache/ (keyed by the
GGUF's hash and the dtype) and later loads read that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ActionFailed, BadInput
from engine.fsutil import building_directory
from engine.paths import DeckPaths
from engine.registry.blobs import file_sha256

DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve; `ref` (name@version) names it in headers and metrics."""

    ref: str
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    context_length: int


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {requested!r} requested but no CUDA GPU is available")
    return requested


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX makes bf16 matmuls fast on the CPU; without them bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        if requested not in DTYPE_NAMES:
            raise BadInput(f"unknown dtype {requested!r} (use auto, {', '.join(DTYPE_NAMES)})")
        return requested
    if device.startswith("cuda") or cpu_has_bf16():
        return "bfloat16"
    return "float32"


def load_for_serving(paths: DeckPaths, ref: str, files: Path, device: str = "auto",
                     dtype: str = "auto") -> LoadedModel:
    """Load the materialized version directory `files` (a HF directory or a single .gguf)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device_name = resolve_device(device)
    dtype_name = resolve_dtype(dtype, device_name)
    source = _safetensors_source(paths, files, dtype_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        if _compressed(source):  # int8 weights + scales: only our own loader knows the layout
            from engine.compression import load_model

            model, dtype_name = load_model(source), "bfloat16"  # int8 layers compute in bf16
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, dtype_name), trust_remote_code=False,
                use_safetensors=True)
    except (OSError, ValueError) as error:
        raise ActionFailed(f"{ref}: cannot load: {error}") from None
    model.to(device_name).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(ref, model, tokenizer, device_name, dtype_name, _context_length(model, tokenizer))


def _compressed(source: Path) -> bool:
    """Whether config.json carries engine.compression's marker (a quantized layout)."""
    import json

    from engine.compression.storage import MARKER_KEY

    try:
        return bool(json.loads((source / "config.json").read_text()).get(MARKER_KEY))
    except (OSError, ValueError):
        return False


def _context_length(model: Any, tokenizer: Any) -> int:
    configured = getattr(model.config, "max_position_embeddings", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    limit = getattr(tokenizer, "model_max_length", 2048)
    return limit if isinstance(limit, int) and limit < 1_000_000 else 2048


def _safetensors_source(paths: DeckPaths, files: Path, dtype_name: str) -> Path:
    ggufs = sorted(files.glob("*.gguf"))
    if not ggufs:
        if not any(files.glob("*.safetensors")):
            raise BadInput(f"{files}: no safetensors or GGUF weights to serve")
        return files
    return converted_gguf(paths, ggufs[0], dtype_name)


def converted_gguf(paths: DeckPaths, gguf: Path, dtype_name: str) -> Path:
    """A safetensors copy of `gguf` in `dtype_name`, converted once and cached."""
    digest = file_sha256(gguf)
    destination = paths.home / "cache" / "gguf" / f"{digest[:24]}-{dtype_name}"
    converted = lambda directory: (directory / "model.safetensors").exists()  # noqa: E731
    if converted(destination):
        return destination
    with building_directory(destination, converted, prefix=".convert-") as staging:
        _convert(gguf, staging, dtype_name)
    return destination


def _convert(gguf: Path, staging: Path, dtype_name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # The weights are dense now; without the GGUF quantizer attached, save_pretrained works.
    for attribute in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attribute):
            setattr(model, attribute, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.to(getattr(torch, dtype_name)).save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
