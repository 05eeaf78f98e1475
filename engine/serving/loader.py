"""Load a registry version for serving, through the one loader (engine.modelio.loader): its
device and dtype policy, its cached GGUF conversion and its int8 format. What serving adds is
the padding token and the context length the server needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ActionFailed
from engine.paths import DeckPaths


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve; `ref` (name@version) names it in headers and metrics."""

    ref: str
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    context_length: int


def load_for_serving(paths: DeckPaths, ref: str, files: Path, device: str = "auto",
                     dtype: str = "auto") -> LoadedModel:
    """Load the materialized version directory `files` (a HF directory or a single .gguf)."""
    from engine.modelio.loader import (is_int8, load_model, load_tokenizer, resolve_device,
                                       resolve_dtype, weights_directory)

    device_name = resolve_device(device)
    dtype_name = resolve_dtype(dtype, device_name)
    source = weights_directory(files, paths.home, dtype_name)
    try:
        tokenizer = load_tokenizer(source, paths.home)
        model = load_model(source, paths.home, dtype_name)
    except (OSError, ValueError) as error:
        raise ActionFailed(f"{ref}: cannot load: {error}") from None
    if is_int8(source):
        dtype_name = "bfloat16"  # int8 layers compute in bf16
    model.to(device_name).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(ref, model, tokenizer, device_name, dtype_name, _context_length(model, tokenizer))


def _context_length(model: Any, tokenizer: Any) -> int:
    configured = getattr(model.config, "max_position_embeddings", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    limit = getattr(tokenizer, "model_max_length", 2048)
    return limit if isinstance(limit, int) and limit < 1_000_000 else 2048
