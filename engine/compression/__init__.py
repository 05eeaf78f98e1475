"""Compression: half precision, int8, pruning and distillation, and the evaluation that judges
them. Importing this package is cheap; torch is imported by the submodules that need it.

`load_model(directory)` loads any version modeldeck stores (plain safetensors, the int8 format
written here, or a GGUF); the serving engine calls it.
"""

from __future__ import annotations

from pathlib import Path

METHODS = ("bf16", "fp16", "int8", "prune", "distill")


def load_model(directory: str | Path):
    from engine.compression.storage import load_model as _load

    return _load(directory)


def load_tokenizer(directory: str | Path):
    from engine.compression.storage import load_tokenizer as _load

    return _load(Path(directory))
