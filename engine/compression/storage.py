"""Save and load compressed versions: safetensors only, never pickle.

A plain (bf16/fp16/pruned/distilled) version is an ordinary Hugging Face directory. An int8 version
is the same directory whose config.json carries a `modeldeck_compression` marker naming the int8
modules; its safetensors hold `qweight` (int8) and `scales` (bf16) for them. `load_model` reads all
of these (and GGUF parents), so the serving engine needs no other entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import BadInput

MARKER_KEY = "modeldeck_compression"
WEIGHTS_FILE = "model.safetensors"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def find_gguf(directory: Path) -> Path | None:
    if directory.is_file() and directory.suffix == ".gguf":
        return directory
    ggufs = sorted(directory.glob("*.gguf")) if directory.is_dir() else []
    has_safetensors = directory.is_dir() and any(directory.glob("*.safetensors"))
    return ggufs[0] if ggufs and not has_safetensors else None


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    _quiet_transformers()
    gguf = find_gguf(Path(directory))
    if gguf is not None:
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return AutoTokenizer.from_pretrained(directory)


def load_model(directory: str | Path):
    """Any version modeldeck stores (HF safetensors, int8 marker, GGUF) as an eval-mode model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    _quiet_transformers()
    directory = Path(directory)
    gguf = find_gguf(directory)
    if gguf is not None:
        return _load_gguf(gguf)
    config = AutoConfig.from_pretrained(directory)
    marker = getattr(config, MARKER_KEY, None)
    if not marker:
        return AutoModelForCausalLM.from_pretrained(directory).eval()
    from engine.compression.int8 import build_int8_shell, retie_after_load

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


def _load_gguf(gguf: Path):
    """transformers dequantizes a GGUF to fp32; detach its quantizer so the model is plain."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.is_quantized = False
    return model.eval()


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
