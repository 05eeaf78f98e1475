"""After training: save the weights (LoRA merged, or the adapter alone), register the next
version with its lineage and metrics, and judge whether it beats its parent. The deploy itself
(deploy-if-better) is the job's post-step above the training layer (engine.actions.jobs
run_finetune_job): training never calls a verb or a target."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from engine.jobs import JobContext
from engine.registry.records import VersionInfo
from engine.testhooks import pause_point
from engine.finetune_settings import FinetuneSettings


def publish_result(context: JobContext, deck: Any, parent: VersionInfo, model: Any, tokenizer: Any,
                   settings: FinetuneSettings, spec: dict[str, Any], eval_loss: float | None,
                   parent_eval_loss: float | None) -> dict[str, Any]:
    from engine.registry.inspect import describe_source

    existing = version_of_job(deck, parent.model, context.job_id)
    if existing is not None:  # an earlier attempt registered, then died: reuse, never register twice
        return _reuse(context, deck, existing, spec, parent_eval_loss)
    output = save_output(context.directory / "output", model, tokenizer, settings,
                         keep_adapter=bool(spec.get("keep_adapter")))
    causal = spec.get("task", "causal-lm") == "causal-lm"  # perplexity means nothing for labels
    metrics = {"eval_loss": eval_loss, "perplexity": math.exp(eval_loss)
               if causal and eval_loss is not None and eval_loss < 50 else None}
    if parent_eval_loss is not None:
        metrics["parent_eval_loss"] = parent_eval_loss
    lineage = {"parent": parent.ref, "job_id": context.job_id, "data_sha256": spec["data_sha256"],
               "data_file": spec["data"], "eval_data_sha256": spec.get("eval_data_sha256"),
               "method": settings.method, "settings": settings.to_dict()}
    if spec.get("keep_adapter"):
        lineage["base"] = parent.ref
    version = deck.registry.register(
        parent.model, describe_source(output), produced_by="finetune", source=context.job_id,
        parent_version=parent.version, metrics=metrics, lineage=lineage, audit_verb="finetune",
        audit_arguments={"job_id": context.job_id, "parent": parent.ref, "method": settings.method})
    context.emit("registered", version=version.ref, kind=version.kind, metrics=metrics)
    pause_point("finetune:registered")  # test hook: a kill here must not register twice on resume
    return _finish(context, deck, version, metrics, spec, eval_loss, parent_eval_loss)


def version_of_job(deck: Any, model: str, job_id: str) -> VersionInfo | None:
    """The version this job already registered (its lineage names the job), if any."""
    return next((v for v in deck.registry.versions(model) if v.lineage.get("job_id") == job_id), None)


def _reuse(context: JobContext, deck: Any, version: VersionInfo, spec: dict[str, Any],
           parent_eval_loss: float | None) -> dict[str, Any]:
    # judge on what was registered: the weights this attempt trained are not the ones stored
    metrics = dict(version.metrics or {})
    context.emit("registered", version=version.ref, kind=version.kind, metrics=metrics, reused=True)
    return _finish(context, deck, version, metrics, spec, metrics.get("eval_loss"),
                   metrics.get("parent_eval_loss", parent_eval_loss))


def _finish(context: JobContext, deck: Any, version: VersionInfo, metrics: dict[str, Any],
            spec: dict[str, Any], eval_loss: float | None,
            parent_eval_loss: float | None) -> dict[str, Any]:
    """The job's result; with deploy-if-better, what the post-step needs to decide (the same on
    a resumed job that reused its version, so it cannot deploy twice either: a deploy of the
    version already deployed changes nothing)."""
    result: dict[str, Any] = {"version": version.ref, "kind": version.kind, "metrics": metrics}
    if spec.get("deploy_if_better"):
        result["deploy_if_better"] = {"target": spec["deploy_if_better"], "eval_loss": eval_loss,
                                      "parent_eval_loss": parent_eval_loss}
    return result


def save_output(output: Path, model: Any, tokenizer: Any, settings: FinetuneSettings,
                keep_adapter: bool) -> Path:
    if output.exists():  # a previous attempt died while saving
        shutil.rmtree(output)
    if settings.method == "lora" and not keep_adapter:
        model = model.merge_and_unload()
    model.save_pretrained(output)
    if keep_adapter and settings.method == "lora":
        _drop_local_base_path(output)
    else:
        tokenizer.save_pretrained(output)
    return output


def _drop_local_base_path(output: Path) -> None:
    """peft records the base model's local path; the registry lineage names the base instead."""
    import json

    config_path = output / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = None
    config_path.write_text(json.dumps(config, indent=2))


def improvement(job_id: str, eval_loss: float | None,
                parent_eval_loss: float | None) -> tuple[bool, str]:
    """(beats the parent, why): the deploy-if-better judgement, from the two eval losses."""
    if eval_loss is None or parent_eval_loss is None:
        return False, "no eval data to compare with the parent"
    if eval_loss >= parent_eval_loss:
        return False, f"eval loss {eval_loss:.4f} does not beat the parent's {parent_eval_loss:.4f}"
    return True, f"finetune {job_id}: eval loss {eval_loss:.4f} < parent {parent_eval_loss:.4f}"
