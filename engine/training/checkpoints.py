"""A fine-tuning job's checkpoints as versions: `modeldeck jobs register-checkpoint` registers
the weights of one checkpoint (LoRA merged onto the parent unless the job keeps its adapter)
with the eval metrics the Trainer recorded at that step."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.finetune_settings import settings_from_dict
from engine.registry.records import VersionInfo


def complete_checkpoints(directory: Path) -> dict[int, Path]:
    """step -> checkpoint-N the Trainer finished writing (trainer_state.json is written last)."""
    if not directory.is_dir():
        return {}
    return {int(path.name.removeprefix("checkpoint-")): path
            for path in directory.glob("checkpoint-*")
            if path.name.removeprefix("checkpoint-").isdigit()
            and (path / "trainer_state.json").exists()}


def choose_checkpoint(job_dir: Path, job_id: str, step: int | None) -> tuple[int, Path]:
    available = complete_checkpoints(job_dir / "checkpoints")
    if not available:
        raise BadInput(f"job {job_id} has no complete checkpoint yet")
    if step is None:
        step = max(available)
    if step not in available:
        raise BadInput(f"job {job_id} has no checkpoint at step {step} "
                       f"(checkpoints: {', '.join(map(str, sorted(available)))})")
    return step, available[step]


def eval_metrics_at(checkpoint: Path, step: int, causal: bool) -> dict[str, Any]:
    """The eval the Trainer logged at the checkpoint's step (checkpoints and evals coincide by
    default, and `jobs checkpoint` asks for both); None where there was none."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    logged = next((entry for entry in reversed(state.get("log_history", []))
                   if entry.get("step") == step and "eval_loss" in entry), None)
    loss = float(logged["eval_loss"]) if logged else None
    perplexity = math.exp(loss) if causal and loss is not None and loss < 50 else None
    return {"eval_loss": loss, "perplexity": perplexity, "step": step}


def registered_checkpoint(deck: Any, model: str, job_id: str, step: int) -> VersionInfo | None:
    return next((v for v in deck.registry.versions(model)
                 if v.lineage.get("checkpoint_of_job") == job_id
                 and v.lineage.get("checkpoint_step") == step), None)


def register_checkpoint(deck: Any, job_id: str, job_dir: Path, spec: dict[str, Any],
                        step: int | None, reason: str | None) -> VersionInfo:
    """Load the checkpoint's weights, save them as the job would, register the next version."""
    from engine.registry.inspect import describe_source
    from engine.training.publish import save_output

    step, checkpoint = choose_checkpoint(job_dir, job_id, step)
    existing = registered_checkpoint(deck, spec["model"], job_id, step)
    if existing is not None:
        raise BadInput(f"checkpoint {step} of job {job_id} is already {existing.ref}")
    settings = settings_from_dict(spec["settings"])
    parent = deck.registry.resolve(spec["parent"])
    model, tokenizer = _load(deck, parent, checkpoint, spec, settings)
    output = job_dir / "registered" / f"checkpoint-{step}"
    save_output(output, model, tokenizer, settings, keep_adapter=bool(spec.get("keep_adapter")))
    metrics = eval_metrics_at(checkpoint, step, spec.get("task", "causal-lm") == "causal-lm")
    # not `job_id`: that key marks the job's own final version (engine.training.publish)
    lineage = {"parent": parent.ref, "checkpoint_of_job": job_id, "checkpoint_step": step,
               "data_sha256": spec["data_sha256"], "data_file": spec["data"],
               "method": settings.method, "settings": settings.to_dict()}
    if spec.get("keep_adapter"):
        lineage["base"] = parent.ref
    return deck.registry.register(
        parent.model, describe_source(output), produced_by="finetune", source=job_id,
        parent_version=parent.version, metrics=metrics, lineage=lineage,
        audit_verb="register_checkpoint",
        audit_arguments={"job_id": job_id, "step": step, "reason": reason})


def _load(deck: Any, parent: VersionInfo, checkpoint: Path, spec: dict[str, Any],
          settings: Any) -> tuple[Any, Any]:
    from engine.training.worker import load_model, load_tokenizer

    model_dir = deck.registry.materialize(parent)
    tokenizer = load_tokenizer(model_dir, deck.paths.home)
    task, labels = spec.get("task", "causal-lm"), spec.get("labels") or []
    if settings.method == "lora":
        from peft import PeftModel

        base = load_model(model_dir, deck.paths.home, task, labels, tokenizer)
        return PeftModel.from_pretrained(base, str(checkpoint)), tokenizer
    # full / freeze checkpoints hold the whole model as safetensors (the Trainer's save)
    return load_model(checkpoint, deck.paths.home, task, labels, tokenizer), tokenizer
