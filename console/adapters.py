"""Thin adapters from the engine's telemetry and jobs modules to the console's view models.

Those modules are built in parallel with the console; each adapter reads attributes by name,
tolerantly, and turns an absent module or function into 'not-available' data with the reason.
Called from thread workers only.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from console.data import (Availability, EndpointRow, EndpointsPanel, GpuPanel, GpuRow, JobRow,
                          JobsPanel, LossSeries, ProcessRow)
from engine.deck import Deck


def pick(obj: Any, *names: str, default: Any = None) -> Any:
    """The first attribute (or mapping key) of `names` that obj has and that is not None."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


def first_function(module: ModuleType | None, *names: str) -> Any | None:
    if module is None:
        return None
    return next((getattr(module, name) for name in names if callable(getattr(module, name, None))),
                None)


# ---- GPUs -------------------------------------------------------------------------------------


def gpu_panel_from_telemetry(telemetry: ModuleType | None, deck: Deck) -> GpuPanel:
    read = first_function(telemetry, "gpu_snapshot", "read_gpus", "gpus")
    if read is None:
        return GpuPanel("no-nvml", "GPU telemetry is not available in this build")
    try:
        snapshot = read()
    except Exception as error:  # telemetry failing is shown, never raised into the UI
        return GpuPanel("error", f"GPU telemetry failed: {error}")
    status = str(pick(snapshot, "status", default="ok"))
    rows = tuple(gpu_row(device) for device in pick(snapshot, "gpus", "devices", default=()))
    return GpuPanel(status if rows or status != "ok" else "no-gpu",
                    str(pick(snapshot, "reason", default="")), rows)


def gpu_row(device: Any) -> GpuRow:
    processes = tuple(ProcessRow(int(pick(p, "pid", default=0)), str(pick(p, "name", default="?")),
                                 pick(p, "memory_bytes", "used_memory_bytes"))
                      for p in pick(device, "processes", default=()))
    return GpuRow(int(pick(device, "index", default=0)), str(pick(device, "name", default="GPU")),
                  pick(device, "utilization_pct", "utilization", "gpu_util"),
                  pick(device, "memory_used_bytes", "memory_used"),
                  pick(device, "memory_total_bytes", "memory_total"),
                  pick(device, "temperature_c", "temperature"),
                  pick(device, "power_w", "power_watts", "power"),
                  tuple(pick(device, "utilization_history", "history", default=())), processes)


# ---- endpoints --------------------------------------------------------------------------------


def endpoints_from_telemetry(telemetry: ModuleType | None, deck: Deck) -> EndpointsPanel:
    read = first_function(telemetry, "endpoint_snapshots", "read_endpoints", "endpoints")
    if read is None:
        return EndpointsPanel("not-available", "endpoint telemetry is not available in this build")
    try:
        snapshots = read(deck)
    except Exception as error:
        return EndpointsPanel("not-available", f"endpoint telemetry failed: {error}")
    return EndpointsPanel("ok", "", tuple(endpoint_row(item) for item in snapshots))


def endpoint_row(item: Any) -> EndpointRow:
    return EndpointRow(
        str(pick(item, "name", default="?")), str(pick(item, "kind", default="")),
        str(pick(item, "status", "state", default="stale")), str(pick(item, "reason", default="")),
        pick(item, "tokens_per_s", "generation_tokens_per_s"), pick(item, "requests_per_s"),
        pick(item, "ttft_p95_s", "ttft_p95"), pick(item, "running", "requests_running"),
        pick(item, "waiting", "requests_waiting"), pick(item, "kv_cache_pct", "kv_cache_usage_pct"),
        tuple(pick(item, "tokens_history", "history", default=())))


# ---- jobs and loss ----------------------------------------------------------------------------


def jobs_from_engine(jobs: ModuleType | None, deck: Deck) -> JobsPanel:
    read = first_function(jobs, "list_jobs", "jobs")
    if read is None:
        return JobsPanel("not-available", "jobs are not available in this build")
    try:
        listed = read(deck)
    except Exception as error:
        return JobsPanel("not-available", f"reading jobs failed: {error}")
    return JobsPanel("ok", "", tuple(job_row(job) for job in listed))


def job_row(job: Any) -> JobRow:
    return JobRow(str(pick(job, "job_id", "id", default="?")), str(pick(job, "kind", default="")),
                  str(pick(job, "model", "reference", "base", default="")),
                  str(pick(job, "state", "status", default="unknown")),
                  pick(job, "progress"), pick(job, "eta_s", "eta"),
                  str(pick(job, "detail", "message", "error", default="")))


def loss_from_engine(jobs: ModuleType | None, deck: Deck, job_id: str | None) -> LossSeries:
    if job_id is None:
        return LossSeries(None, status="no-job", reason="no job selected")
    read = first_function(jobs, "loss_series", "read_loss")
    if read is None:
        return LossSeries(job_id, status="not-available", reason="job events are not available")
    try:
        series = read(deck, job_id)
    except Exception as error:
        return LossSeries(job_id, status="not-available", reason=f"reading loss failed: {error}")
    return LossSeries(job_id, tuple(pick(series, "train_steps", default=())),
                      tuple(pick(series, "train_loss", default=())),
                      tuple(pick(series, "eval_steps", default=())),
                      tuple(pick(series, "eval_loss", default=())))


# ---- which verbs exist ------------------------------------------------------------------------


def engine_availability() -> Availability:
    from engine import actions

    finetune = None if callable(getattr(actions, "finetune", None)) else \
        "fine-tuning is not available in this build (engine.actions.finetune is missing)"
    compress = None if callable(getattr(actions, "compress", None)) else \
        "compression is not available in this build (engine.actions.compress is missing)"
    cancel = None if callable(getattr(actions, "cancel_job", None)) else \
        "cancelling jobs is not available in this build (engine.actions.cancel_job is missing)"
    methods = ("bf16", "fp16", "int8", "prune", "distill")
    return Availability(finetune, compress, cancel, methods)
