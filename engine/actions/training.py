"""The verbs that act on a running training job and read its signals: stop early, checkpoint
now, register a checkpoint as a version, and the per-step metrics scripts read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.actions.jobs import JobRequest, JobResult
from engine.deck import Deck
from engine.errors import BadInput


def stop_job(deck: Deck, request: JobRequest) -> JobResult:
    """Stop early: the worker finishes its step, saves, evaluates and registers the version
    as a finished job would."""
    return _request(deck, request, "stop")


def checkpoint_job(deck: Deck, request: JobRequest) -> JobResult:
    """Checkpoint now: after its current step the worker evaluates and saves a checkpoint
    (`jobs resume` can start from it, `jobs register-checkpoint` can register it)."""
    return _request(deck, request, "checkpoint")


def _request(deck: Deck, request: JobRequest, action: str) -> JobResult:
    from engine import jobs

    job = jobs.request_control(deck, request.job_id, action)
    deck.registry.append_audit(f"{action}_job", {"job_id": job.id}, "requested",
                               reason=request.reason)
    return JobResult(job, {"requested": action})


@dataclass(frozen=True)
class RegisterCheckpointRequest:
    job_id: str
    step: int | None = None  # None: the newest complete checkpoint
    reason: str | None = None


def register_checkpoint(deck: Deck, request: RegisterCheckpointRequest) -> JobResult:
    """Register one checkpoint of a fine-tuning job as the next version of its model, with the
    eval metrics recorded at that step."""
    from engine import jobs
    from engine.training.checkpoints import register_checkpoint as register

    job = jobs.get_job(deck, request.job_id)
    if job.kind != "finetune":
        raise BadInput(f"job {job.id} is a {job.kind} job: only fine-tuning checkpoints register")
    version = register(deck, job.id, Path(job.directory), job.spec, request.step, request.reason)
    jobs.append_event(Path(job.directory), "checkpoint_registered",
                      step=version.lineage["checkpoint_step"], version=version.ref,
                      metrics=version.metrics)
    return JobResult(job, {"version": version.ref, "step": version.lineage["checkpoint_step"],
                           "metrics": version.metrics})


def list_checkpoints(deck: Deck, job_id: str) -> list[dict[str, Any]]:
    """The job's complete checkpoints, newest first, with the eval loss logged at each."""
    from engine import jobs
    from engine.training.checkpoints import complete_checkpoints, eval_metrics_at

    job = jobs.get_job(deck, job_id)
    found = complete_checkpoints(Path(job.directory) / "checkpoints")
    return [{"step": step, "path": str(path),
             "eval_loss": eval_metrics_at(path, step, causal=False)["eval_loss"]}
            for step, path in sorted(found.items(), reverse=True)]


@dataclass(frozen=True)
class MetricsRequest:
    job_id: str
    metric: str | None = None  # None: every metric
    around: int | None = None
    window: int | None = None
    span: float | None = None


def job_metrics(deck: Deck, request: MetricsRequest) -> dict[str, Any]:
    """The job's signals by step, raw and EMA-smoothed, optionally a window around a step."""
    from engine.training import metrics

    if request.window is not None and request.around is None:
        raise BadInput("--window needs --around STEP")
    names = [metrics.check_metric(request.metric)] if request.metric else list(metrics.METRICS)
    events = _events(deck, request.job_id)
    span = request.span if request.span is not None else metrics.DEFAULT_SPAN
    window = request.window if request.window is not None else 10
    series = {name: metrics.metric_points(events, name, request.around, window, span)
              for name in names}
    return {"job": request.job_id, "around": request.around,
            "window": window if request.around is not None else None, "metrics": series}


def job_snapshot(deck: Deck, job_id: str, step: int) -> dict[str, Any]:
    """Every metric the job logged at `step`."""
    from engine.training.metrics import snapshot_at

    return {"job": job_id, **snapshot_at(_events(deck, job_id), step)}


def _events(deck: Deck, job_id: str) -> list[dict[str, Any]]:
    from engine import jobs

    return jobs.read_events(jobs.job_directory(deck, job_id))[0]
