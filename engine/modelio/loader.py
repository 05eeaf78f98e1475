"""Load any version modeldeck stores: a Hugging Face safetensors directory, the int8 format
(engine.modelio.storage), or a GGUF file. No remote code, no pickle.

One GGUF strategy: transformers dequantizes a GGUF on every load, which is slow, so the first load
converts it once into a safetensors directory under the deck home's cache/gguf/ (keyed by the
GGUF's hash and the dtype) and every later load, by any caller, reads that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.fsutil import building_directory
from engine.paths import deck_home
from engine.registry.blobs import file_sha256
# The device and dtype policy lives in engine.modelio.devices (one policy for serve, fine-tune
# and compress); re-exported here for the callers that load models.
from engine.modelio.devices import (DTYPE_NAMES, cpu_has_bf16, resolve_device,  # noqa: F401
                                    resolve_dtype)

MARKER_KEY = "modeldeck_compression"  # config.json key naming the int8 modules (storage.py)


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


# ---- where the weights are: GGUF converted once ---------------------------------------------


def find_gguf(directory: Path) -> Path | None:
    """The GGUF to read, when the version is one (a directory with safetensors is not)."""
    if directory.is_file() and directory.suffix == ".gguf":
        return directory
    ggufs = sorted(directory.glob("*.gguf")) if directory.is_dir() else []
    has_safetensors = directory.is_dir() and any(directory.glob("*.safetensors"))
    return ggufs[0] if ggufs and not has_safetensors else None


def weights_directory(directory: str | Path, cache_home: Path | None = None,
                      dtype_name: str = "float32") -> Path:
    """A safetensors directory for this version: itself, or its GGUF converted (cached)."""
    directory = Path(directory)
    gguf = find_gguf(directory)
    if gguf is None:
        if directory.is_dir() and not any(directory.glob("*.safetensors")):
            raise BadInput(f"{directory}: no safetensors or GGUF weights")
        return directory
    return converted_gguf(cache_home or deck_home(), gguf, dtype_name)


def converted_gguf(cache_home: Path, gguf: Path, dtype_name: str) -> Path:
    """A safetensors copy of `gguf` in `dtype_name`, converted once and cached."""
    digest = file_sha256(gguf)
    destination = cache_home / "cache" / "gguf" / f"{digest[:24]}-{dtype_name}"
    converted = lambda directory: (directory / "model.safetensors").exists()  # noqa: E731
    if converted(destination):
        return destination
    with building_directory(destination, converted, prefix=".convert-") as staging:
        _convert(gguf, staging, dtype_name)
    return destination


def _convert(gguf: Path, staging: Path, dtype_name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Any: the attributes below are transformers' quantizer bookkeeping, not nn.Module's
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
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


# ---- loading -------------------------------------------------------------------------------


def is_int8(directory: Path) -> bool:
    """Whether config.json carries the int8 marker (a layout only engine.modelio reads)."""
    try:
        return bool(json.loads((Path(directory) / "config.json").read_text()).get(MARKER_KEY))
    except (OSError, ValueError):
        return False


def load_tokenizer(directory: str | Path, cache_home: Path | None = None) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(weights_directory(directory, cache_home),
                                         trust_remote_code=False)


def load_model(directory: str | Path, cache_home: Path | None = None,
               dtype_name: str | None = None) -> Any:
    """Any stored version as an eval-mode causal LM. dtype_name: None keeps the stored dtype;
    an int8 version always computes in bf16 (its kernel is fast for bf16 only)."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    source = weights_directory(directory, cache_home, dtype_name or "float32")
    if is_int8(source):
        from engine.modelio.storage import load_int8

        return load_int8(source)
    options: dict[str, Any] = {"dtype": getattr(torch, dtype_name)} if dtype_name else {}
    return AutoModelForCausalLM.from_pretrained(source, trust_remote_code=False,
                                                use_safetensors=True, **options).eval()
