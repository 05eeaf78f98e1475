"""Save versions, and read the int8 format: safetensors only, never pickle.

A plain (bf16/fp16/pruned/distilled) version is an ordinary Hugging Face directory. An int8 version
is the same directory whose config.json carries a `modeldeck_compression` marker naming the int8
modules; its safetensors hold `qweight` (int8) and `scales` (bf16) for them. Loading any version
goes through engine.modelio.loader.load_model, which calls load_int8 here for that format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.modelio.loader import MARKER_KEY

WEIGHTS_FILE = "model.safetensors"


def load_int8(directory: Path) -> Any:
    """An int8 version (its config.json names the int8 modules) as an eval-mode model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.modelio.int8 import build_int8_shell, retie_after_load

    config = AutoConfig.from_pretrained(directory)
    marker = getattr(config, MARKER_KEY)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    build_int8_shell(model, marker)
    retie_after_load(model, marker)
    _load_state(model, directory / WEIGHTS_FILE, marker)
    return model.eval()


def _load_state(model, weights_path: Path, marker: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    state = load_file(str(weights_path))
    result = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    stored_pointers = {current[key].data_ptr() for key in state if key in current}
    # a tied tensor is stored once; its other names are filled through the shared storage
    missing = [key for key in result.missing_keys if current[key].data_ptr() not in stored_pointers]
    if missing or result.unexpected_keys:
        raise BadInput(f"{weights_path}: does not match its int8 marker "
                       f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")


def save_model(model, tokenizer, directory: Path, marker: dict[str, Any] | None = None) -> Path:
    """Write safetensors + config + tokenizer into `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    if marker is None:
        model.save_pretrained(directory, safe_serialization=True)
    else:
        _save_int8(model, directory, marker)
    tokenizer.save_pretrained(directory)
    return directory


def _save_int8(model, directory: Path, marker: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    state, seen = {}, set()
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # tied (head = embedding): stored once, re-tied on load
            continue
        seen.add(tensor.data_ptr())
        state[key] = tensor.contiguous()
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    config = model.config
    setattr(config, MARKER_KEY, marker)
    config.dtype = torch.bfloat16
    config.save_pretrained(directory)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(directory)


def directory_bytes(directory: Path) -> int:
    directory = Path(directory)
    if directory.is_file():
        return directory.stat().st_size
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())
