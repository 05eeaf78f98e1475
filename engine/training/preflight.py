"""Checks against the parent version that a fine-tuning job would otherwise fail (or, worse,
finish wrongly) on, run by the finetune verb before any job is written.

An int8 version (engine.compression's format: qweight/scales, a marker in config.json) is
refused: transformers' loader does not know the marker, skips qweight/scales and starts from
randomly initialized weights, so training "succeeds" on garbage (measured: eval loss 11.6 where
the parent's is 3.5). LoRA target names are checked against the architecture's real module
names, built on the meta device from config.json (no weights are read, so it is cheap).
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


def module_names(config_path: Path) -> set[str]:
    """The leaf names LoRA can target (peft matches a target against a module name's suffix):
    every Linear, Embedding and GPT-2 style Conv1D of the architecture, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    values = read_config(config_path)  # a blob path: not named config.json, so no from_pretrained
    model_type = values.pop("model_type", None)
    if not model_type:
        raise BadInput(f"{config_path}: config.json names no model_type; cannot check --lora-targets")
    config = AutoConfig.for_model(model_type, **values)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    kinds = (torch.nn.Linear, torch.nn.Embedding, Conv1D)
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if name and isinstance(module, kinds)}


def check_lora_targets(config_path: Path | None, targets: tuple[str, ...] | None) -> None:
    if not targets or config_path is None:  # peft's default for the architecture, or a GGUF
        return
    valid = module_names(config_path)
    unknown = [target for target in targets
               if not any(name == target or name.endswith(target) for name in valid)]
    if unknown:
        raise BadInput(f"--lora-targets {', '.join(repr(t) for t in unknown)}: no such module in "
                       f"this model (valid: {', '.join(sorted(valid))})")


def check_eval_file(eval_file: str | None) -> None:
    if eval_file and not Path(eval_file).expanduser().is_file():
        raise BadInput(f"eval file {eval_file} does not exist")
