"""Fine-tuning jobs and the job verbs (list, show, cancel, resume)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.actions.deployments import check_target
from engine.deck import Deck
from engine.errors import BadInput


@dataclass(frozen=True)
class FinetuneRequest:
    reference: str
    data: Path
    overrides: dict[str, Any] = field(default_factory=dict)  # FinetuneSettings fields; None = unset
    config_file: Path | None = None
    on_bad_row: str = "error"
    keep_adapter: bool = False
    deploy_if_better: str | None = None
    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    node_rank: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class JobResult:
    job: Any  # engine.jobs.JobInfo
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job.to_dict(), **({"data": self.data} if self.data else {})}


def finetune(deck: Deck, request: FinetuneRequest) -> JobResult:
    """Validate everything (model, data, settings, target), then start the detached job."""
    from engine.jobs import JobLaunch, start_job
    from engine.training import preflight
    from engine.training.data import load_dataset
    from engine.finetune_settings import build_settings

    parent = deck.registry.resolve(request.reference)
    if parent.kind != "model":
        raise BadInput(f"{parent.ref} is an {parent.kind}, not a model; fine-tune its base instead")
    config = next((deck.registry.blobs.path_of(f.sha256) for f in parent.files
                   if f.name == "config.json"), None)
    parent_config = preflight.read_config(config)
    preflight.refuse_compressed(parent.ref, parent.lineage.get("parent"), parent_config)
    settings = build_settings(request.config_file, request.overrides, finetune_defaults(deck))
    preflight.check_eval_file(settings.eval_file)
    dataset = load_dataset(request.data, request.on_bad_row)
    eval_set = load_dataset(Path(settings.eval_file), request.on_bad_row) if settings.eval_file else None
    if request.keep_adapter and settings.method != "lora":
        raise BadInput("--keep-adapter only applies to --method lora")
    if request.deploy_if_better is not None:
        check_target(deck, request.deploy_if_better)
    if request.nproc < 1 or request.nnodes < 1:
        raise BadInput("--nproc and --nnodes must be at least 1")
    if settings.method == "lora":
        weights = [deck.registry.blobs.path_of(f.sha256) for f in parent.files
                   if f.name.endswith(".safetensors")]
        preflight.check_lora_targets(weights, parent_config, settings.lora_targets)
    spec = {"parent": parent.ref, "model": parent.model, "data": str(dataset.path),
            "data_sha256": dataset.sha256, "format": dataset.format,
            "task": "classification" if dataset.format == "classification" else "causal-lm",
            "labels": list(dataset.labels), "on_bad_row": request.on_bad_row,
            "eval_data": str(eval_set.path) if eval_set else None,
            "eval_data_sha256": eval_set.sha256 if eval_set else None,
            "settings": settings.to_dict(), "keep_adapter": request.keep_adapter,
            "deploy_if_better": request.deploy_if_better, "reason": request.reason}
    launch = JobLaunch(request.nproc, request.nnodes, request.rdzv_endpoint, request.node_rank)
    if launch.distributed and settings.device.startswith("cuda:"):
        raise BadInput(f"--device {settings.device} pins one GPU; with --nproc/--nnodes use "
                       "--device cuda (each process takes its own GPU)")
    job = start_job(deck, "finetune", spec, launch=launch, device=settings.device)
    deck.registry.append_audit("finetune", {"job_id": job.id, "parent": parent.ref,
                                            "data": str(dataset.path), "method": settings.method},
                               "started", reason=request.reason)
    return JobResult(job, dataset.summary())


def finetune_defaults(deck: Deck) -> dict[str, Any]:
    """What deck.toml's [finetune] section sets explicitly (the schema's own defaults fill the
    rest); the console's form prefills from this, and sends only what the user changes."""
    section = deck.config.finetune
    values = {name: getattr(section, name) for name in section.model_fields_set}
    if values.get("eval_file") is not None:
        values["eval_file"] = str(values["eval_file"])
    return values


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    reason: str | None = None


def list_jobs(deck: Deck, kind: str | None = None) -> list[Any]:
    from engine import jobs

    return jobs.list_jobs(deck, kind)


def show_job(deck: Deck, job_id: str) -> JobResult:
    from engine import jobs

    job = jobs.get_job(deck, job_id)
    events, _ = jobs.read_events(Path(job.directory))
    progress = [e for e in events if e.get("type") == "progress"]
    evals = [e for e in events if e.get("type") == "eval"]
    last = progress[-1] if progress else None
    return JobResult(job, {"last_progress": last,
                           "last_eval": evals[-1] if evals else None,
                           "loss_curve": jobs.loss_curve(events),
                           "diagnosis": _job_diagnosis(job.state, last)})


def _job_diagnosis(state: str, progress: dict[str, Any] | None) -> dict[str, Any] | None:
    """One line on a running job (engine.telemetry.diagnosis); None once it has ended."""
    from engine.telemetry.diagnosis import diagnose_job

    if state != "running":
        return None
    since = time.time() - progress["t"] if progress and isinstance(progress.get("t"), float) else None
    return diagnose_job(progress, since).to_dict()


def cancel_job(deck: Deck, request: JobRequest) -> JobResult:
    from engine import jobs

    job = jobs.cancel_job(deck, request.job_id, request.reason or "cancelled by user")
    deck.registry.append_audit("cancel_job", {"job_id": job.id}, job.state, reason=request.reason)
    return JobResult(job)


def resume_job(deck: Deck, request: JobRequest) -> JobResult:
    from engine import jobs

    job = jobs.resume_job(deck, request.job_id)
    deck.registry.append_audit("resume_job", {"job_id": job.id, "attempt": job.attempt}, "started",
                               reason=request.reason)
    return JobResult(job)


# ---- the fine-tuning job's entry point (runs in the detached worker process) ----------------


def run_finetune_job(context: Any) -> dict[str, Any]:
    """engine.jobs' entry for kind `finetune`: train and register (engine.training), then the
    deploy-if-better post-step here, at the layer allowed to deploy. context: engine.jobs
    JobContext."""
    from engine.training.worker import run_finetune

    result = run_finetune(context)
    asked = result.pop("deploy_if_better", None) if result else None
    if asked is not None and context.is_main:
        result["deploy"] = _deploy_if_better(context, result["version"], asked)
    return result


def _deploy_if_better(context: Any, version_ref: str, asked: dict[str, Any]) -> dict[str, Any]:
    from engine.actions.deployments import DeployRequest, deploy
    from engine.errors import DeckError
    from engine.training.publish import improvement

    better, reason = improvement(context.job_id, asked["eval_loss"], asked["parent_eval_loss"])
    decision: dict[str, Any] = {"deployed": False, "reason": reason}
    if better:
        deck = context.deck()
        try:
            outcome = deploy(deck, DeployRequest(version_ref, asked["target"], reason=reason))
            decision = {"deployed": True, "reason": reason, "deploy": outcome.to_dict()}
        except DeckError as error:  # the version stays registered; the deploy is what failed
            decision = {"deployed": False, "reason": f"deploy failed: {error}"}
        finally:
            deck.close()
    context.emit("deploy_decision", target=asked["target"],
                 **{k: v for k, v in decision.items() if k != "deploy"})
    return decision
