"""Jobs as details views: the Jobs pane's row and `jobs show` (the job, its last progress and
eval, its result as the report its kind has)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from console.present import (Details, Section, as_mapping, duration, finite, home_path, number,
                             pairs, percent, plain, when)
from console.present_models import compression_section, finetune_section


def job_details(job: Mapping[str, Any]) -> Details:
    progress = job.get("progress")
    steps = (f"{job['step']} of {job['max_steps']}" if finite(job.get("step"))
             and finite(job.get("max_steps")) else job.get("step"))
    return Details(f"job {job.get('job_id', '')}", (Section("job", pairs([
        ("id", job.get("job_id")), ("kind", job.get("kind")), ("model", job.get("model")),
        ("state", job.get("state")), ("reason", job.get("detail")),
        ("progress", percent(progress) if finite(progress) else None), ("step", steps),
        ("last loss", number(job.get("loss"), 4)), ("ETA", duration(job.get("eta_s"))),
        ("started", when(job.get("started_at"))),
        ("attempt", job.get("attempt") if (job.get("attempt") or 1) > 1 else None),
        ("produced", job.get("result")),
    ])),))


def job_source(spec: Mapping[str, Any]) -> str | None:
    """What a job starts from: a fine-tune's `parent`, a compression's `reference`."""
    value = spec.get("parent") or spec.get("reference") or spec.get("model")
    return str(value) if value else None


def job_report(job: Mapping[str, Any], data: Mapping[str, Any]) -> Details:
    """`jobs show`: the engine's job (to_dict()) and what its events say (last progress, last
    eval), with the result as the side-by-side table its kind has (compression report, or the
    fine-tune's eval loss against the parent's)."""
    spec = as_mapping(job.get("spec"))
    result = as_mapping(job.get("result"))
    progress = as_mapping(data.get("last_progress"))
    last_eval = as_mapping(data.get("last_eval"))
    attempt = job.get("attempt") if finite(job.get("attempt")) else 1
    sections = [Section("job", pairs([
        ("kind", job.get("kind")), ("state", job.get("state")), ("reason", job.get("reason")),
        ("from", job_source(spec)), ("method", spec.get("method")),
        ("produced", result.get("version")),
        ("attempt", attempt if attempt > 1 else None),  # type: ignore[operator]
        ("created", when(job.get("created_at"), seconds=True)),
        ("directory", home_path(str(job["directory"])) if job.get("directory") else None),
    ]))]
    if progress:
        sections.append(Section("progress", pairs(progress_items(progress) + [
            ("last eval loss", number(last_eval.get("eval_loss"), 4)),
            ("data wait", number(progress.get("data_wait_pct"), 0, "%")),
            ("diagnosis", as_mapping(data.get("diagnosis")).get("line"))])))
    report = result.get("report")
    if isinstance(report, Mapping):
        sections.insert(0, compression_section(report))
    tuned = finetune_section(as_mapping(result.get("metrics")))
    if tuned is not None:
        sections.insert(0, tuned)
    return Details(f"job {job.get('id', '')}", tuple(sections))


def progress_items(progress: Mapping[str, Any]) -> list[tuple[str, Any]]:
    step, most = progress.get("step"), progress.get("max_steps")
    return [("phase", progress.get("phase")),
            ("step", f"{step} of {most}" if finite(step) and finite(most) else plain(step)),
            ("loss", number(progress.get("loss"), 4)),
            ("learning rate", f"{progress['learning_rate']:.2e}"
             if finite(progress.get("learning_rate")) else None),
            ("tokens/s", number(progress.get("tokens_per_s"), 0)),
            ("ETA", duration(progress.get("eta_s")) if finite(progress.get("eta_s")) else None)]

