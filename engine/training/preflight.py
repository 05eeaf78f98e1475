"""Checks against the parent version that a fine-tuning job would otherwise fail (or, worse,
finish wrongly) on, run by the finetune verb before any job is written.

An int8 version (engine.compression's format: qweight/scales, a marker in config.json) is
refused: transformers' loader does not know the marker, skips qweight/scales and starts from
randomly initialized weights, so training "succeeds" on garbage (measured: eval loss 11.6 where
the parent's is 3.5). LoRA target names are checked against the architecture's real module
names, read from the safetensors headers (no torch, no weights read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.modelio.loader import MARKER_KEY as INT8_MARKER



def read_config(config_path: Path | None) -> dict[str, Any]:
    if config_path is None:
        return {}
    try:
        value = json.loads(Path(config_path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def refuse_compressed(reference: str, parent_ref: str | None, config: dict[str, Any]) -> None:
    marker = config.get(INT8_MARKER)
    if not marker:
        return
    kind = marker.get("format", "int8") if isinstance(marker, dict) else "int8"
    source = f"its parent {parent_ref}" if parent_ref else "the uncompressed version"
    raise BadInput(f"{reference} is an int8-compressed version ({kind}): its weights cannot be "
                   f"trained; fine-tune {source} instead, then compress the result")


def module_names(weight_files: list[Path], config: dict[str, Any]) -> set[str]:
    """The leaf names LoRA can target (peft matches a target against a module name's suffix):
    every module with a 2-D weight (Linear, Embedding, GPT-2's Conv1D; norms are 1-D), read from
    the safetensors headers. No torch: the console runs this verb in its own process, which
    must never import torch. A head tied to the embedding has no tensor of its own."""
    from engine.registry.inspect import safetensors_header

    names: set[str] = set()
    for path in weight_files:
        header, _ = safetensors_header(path)
        names |= {name.removesuffix(".weight").rsplit(".", 1)[-1] for name, info in header.items()
                  if name.endswith(".weight") and isinstance(info, dict)
                  and len(info.get("shape") or ()) == 2}
    if config.get("tie_word_embeddings", True) and "embed_tokens" in names | {"wte"}:
        names.add("lm_head")
    return names


def check_lora_targets(weight_files: list[Path], config: dict[str, Any],
                       targets: tuple[str, ...] | None) -> None:
    if not targets or not weight_files:  # peft's default for the architecture, or a GGUF
        return
    valid = module_names(weight_files, config)
    unknown = [target for target in targets
               if not any(name == target or name.endswith(target) for name in valid)]
    if unknown:
        raise BadInput(f"--lora-targets {', '.join(repr(t) for t in unknown)}: no such module in "
                       f"this model (valid: {', '.join(sorted(valid))})")


def check_eval_file(eval_file: str | None) -> None:
    if eval_file and not Path(eval_file).expanduser().is_file():
        raise BadInput(f"eval file {eval_file} does not exist")
