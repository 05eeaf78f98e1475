"""Thin adapters from the engine's telemetry and jobs modules to the console's view models.

An absent module (a build without it) or a failing read becomes 'not-available' or 'error'
data with the reason; nothing here raises into the UI. Called from thread workers only.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from console.data import (LOCAL_ENDPOINT, Availability, EndpointRow, EndpointsPanel, GpuPanel,
                          GpuRow, HostView, JobRow, JobsPanel, LossSeries, ProcessRow)
from engine.deck import Deck

HISTORY_POINTS = 120


# ---- GPUs and host ----------------------------------------------------------------------------


class GpuHistory:
    """Utilization history per GPU when the snapshot carries none (one-shot reads)."""

    def __init__(self) -> None:
        self.by_index: dict[int, deque[float]] = {}

    def add(self, index: int, value: float | None) -> tuple[float, ...]:
        history = self.by_index.setdefault(index, deque(maxlen=HISTORY_POINTS))
        if value is not None:
            history.append(float(value))
        return tuple(history)


def gpu_panel_from_telemetry(telemetry: ModuleType | None, history: GpuHistory) -> GpuPanel:
    if telemetry is None or not hasattr(telemetry, "gpu_snapshot"):
        return GpuPanel("no-nvml", "GPU telemetry is not part of this build")
    try:
        snapshot = telemetry.gpu_snapshot()
    except Exception as error:  # telemetry failing is shown, never raised into the UI
        return GpuPanel("error", f"GPU telemetry failed: {error}")
    rows = tuple(gpu_row(device, history) for device in snapshot.devices)
    status = snapshot.status if rows or snapshot.status != "ok" else "no-gpu"
    return GpuPanel(status, snapshot.reason or "", rows)


def gpu_row(device: Any, history: GpuHistory) -> GpuRow:
    processes = tuple(ProcessRow(process.pid, process.name or "?", process.memory_bytes)
                      for process in device.processes)
    utilization_history = tuple(device.utilization_history) or history.add(
        device.index, device.utilization_pct)
    return GpuRow(device.index, device.name or "GPU", device.utilization_pct,
                  device.memory_used_bytes, device.memory_total_bytes, device.temperature_c,
                  device.power_w, utilization_history, processes)


class HostReader:
    """The host's CPU and memory through psutil. CPU use comes from cpu_times() deltas kept
    here: psutil 7 keeps cpu_percent()'s previous sample per thread, and every poll runs in a
    new worker thread, where cpu_percent() would always read 0."""

    def __init__(self) -> None:
        self.previous: Any = None
        self.history: deque[float] = deque(maxlen=HISTORY_POINTS)

    def read(self) -> HostView:
        import psutil

        times = psutil.cpu_times()
        cpu = busy_pct(self.previous, times) if self.previous is not None else 0.0
        self.previous = times
        self.history.append(cpu)
        memory = psutil.virtual_memory()
        return HostView(cpu, psutil.cpu_count() or 1, memory.total - memory.available,
                        memory.total, tuple(self.history))


def busy_pct(before: Any, after: Any) -> float:
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    return max(0.0, min(100.0, 100.0 * (1 - idle / total))) if total > 0 else 0.0


# ---- endpoints: the local server and the configured remote ones -------------------------------


class EndpointReader:
    """Keeps one poller (rates need the previous scrape) for the local server plus deck.toml's
    [[endpoints]]; rebuilt when the local server's address changes."""

    def __init__(self) -> None:
        self.poller: Any = None
        self.key: tuple | None = None
        self.history: dict[str, deque[float]] = {}

    def read(self, deck: Deck) -> EndpointsPanel:
        try:
            from engine.remote.poller import EndpointPoller
        except ImportError:
            return EndpointsPanel("not-available", "endpoint telemetry is not part of this build")
        try:
            from engine import actions

            server = actions.local_server_state(deck)
            endpoints = self.endpoint_settings(deck, server)
            rows = tuple(self.row(snapshot) for snapshot in self.poll(endpoints, EndpointPoller))
        except Exception as error:
            return EndpointsPanel("not-available", f"endpoint telemetry failed: {error}")
        if server.get("state") != "running":  # the local server is a row even when it is down
            rows = (stopped_local_row(server), *rows)
        return EndpointsPanel("ok", "", rows, tuple(server.get("warnings", ())))

    def poll(self, endpoints: list[Any], poller_type: Any) -> list[Any]:
        if not endpoints:
            return []
        key = tuple(endpoint.model_dump_json() for endpoint in endpoints)
        if key != self.key:
            if self.poller is not None:
                self.poller.close()
            self.poller, self.key = poller_type(endpoints, HISTORY_POINTS), key
        return self.poller.poll_blocking()

    @staticmethod
    def endpoint_settings(deck: Deck, server: dict[str, Any]) -> list[Any]:
        from engine.config import EndpointSettings

        endpoints = list(deck.config.endpoints)
        if server.get("state") == "running" and server.get("url"):
            endpoints.insert(0, EndpointSettings(name=LOCAL_ENDPOINT, kind="modeldeck", url=server["url"],
                                                 api_key_env=deck.config.serve.api_key_env,
                                                 api_key_file=deck.config.serve.api_key_file))
        return endpoints

    def row(self, snapshot: Any) -> EndpointRow:
        history = tuple(snapshot.tokens_history)
        if not history:
            kept = self.history.setdefault(snapshot.name, deque(maxlen=HISTORY_POINTS))
            kept.append(snapshot.tokens_per_s or 0.0)
            history = tuple(kept)
        latency = tuple((label, getattr(snapshot, f"{key}_p50_s", None),
                         getattr(snapshot, f"{key}_p95_s", None), getattr(snapshot, f"{key}_p99_s", None))
                        for label, key in LATENCY_MEASURES)
        return EndpointRow(snapshot.name, snapshot.kind, snapshot.status, snapshot.reason or "",
                           snapshot.tokens_per_s, snapshot.requests_per_s, snapshot.ttft_p95_s,
                           _int(snapshot.running), _int(snapshot.waiting), snapshot.kv_cache_pct,
                           history, str(getattr(snapshot, "url", "") or ""), latency,
                           getattr(snapshot, "checked_at", None))


LATENCY_MEASURES = (("time to first token", "ttft"), ("inter-token", "itl"), ("end to end", "e2e"))


def stopped_local_row(server: dict[str, Any]) -> EndpointRow:
    reason = ("its pid is gone (stale run file)" if server.get("state") == "stale"
              else "not running: `s` or `modeldeck serve --detach` starts it")
    return EndpointRow(LOCAL_ENDPOINT, "modeldeck", "stopped", reason)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---- jobs and loss ----------------------------------------------------------------------------


@dataclass
class JobStream:
    """What has been read of one job's events.jsonl: read on from `offset`, never twice."""

    offset: int = 0
    train: dict[int, float] = field(default_factory=dict)  # step -> loss; a resume overrides
    evals: dict[int, float] = field(default_factory=dict)
    last_progress: dict[str, Any] | None = None
    series: LossSeries | None = None


class JobReader:
    def __init__(self) -> None:
        self.streams: dict[str, JobStream] = {}
        self.lock = threading.Lock()  # the jobs and the loss polls run in different threads

    def jobs(self, jobs_module: ModuleType | None, deck: Deck) -> JobsPanel:
        if jobs_module is None:
            return JobsPanel("not-available", "jobs are not part of this build")
        try:
            listed = jobs_module.list_jobs(deck)
            rows = tuple(self.job_row(jobs_module, job) for job in reversed(listed))
        except Exception as error:
            return JobsPanel("not-available", f"reading jobs failed: {error}")
        return JobsPanel("ok", "", rows)

    def job_row(self, jobs_module: ModuleType, job: Any) -> JobRow:
        stream = self.update(jobs_module, job.id, Path(job.directory))
        progress = stream.last_progress or {}
        fraction = None
        if progress.get("max_steps"):
            fraction = min(1.0, progress.get("step", 0) / progress["max_steps"])
        if job.state == "finished":
            fraction = 1.0
        model = job.spec.get("parent") or job.spec.get("reference") or job.spec.get("model") or ""
        eta = progress.get("eta_s") if job.state == "running" else None
        result = job.result if isinstance(job.result, dict) else {}
        return JobRow(job.id, job.kind, str(model), job.state, fraction, eta, job.reason or "",
                      started_at=job.created_at, step=_int(progress.get("step")),
                      max_steps=_int(progress.get("max_steps")), loss=progress.get("loss"),
                      attempt=int(getattr(job, "attempt", 1) or 1),
                      result=str(result.get("version") or ""))

    def update(self, jobs_module: ModuleType, job_id: str, directory: Path) -> JobStream:
        with self.lock:
            stream = self.streams.setdefault(job_id, JobStream())
            events, stream.offset = jobs_module.read_events(directory, stream.offset)
            for event in events:
                kind = event.get("type")
                if kind == "progress":
                    stream.last_progress = event
                    if event.get("loss") is not None:
                        stream.train[int(event["step"])] = float(event["loss"])
                elif kind == "eval" and event.get("eval_loss") is not None:
                    stream.evals[int(event.get("step") or 0)] = float(event["eval_loss"])
            if events or stream.series is None:
                stream.series = series_of(job_id, stream)
            return stream

    def loss(self, jobs_module: ModuleType | None, deck: Deck, job_id: str | None) -> LossSeries:
        """job_id None: the newest job, the one the Jobs pane selects first (so the first
        loss read need not wait for the jobs read)."""
        if jobs_module is None:
            return LossSeries(job_id, status="not-available", reason="jobs are not part of this build")
        try:
            if job_id is None:
                listed = jobs_module.list_jobs(deck)
                if not listed:
                    return LossSeries(None, status="no-job", reason="no job yet")
                job_id = listed[-1].id
            directory = jobs_module.job_directory(deck, job_id)
            return self.update(jobs_module, job_id, directory).series  # type: ignore[return-value]
        except Exception as error:
            return LossSeries(job_id, status="not-available", reason=f"reading loss failed: {error}")


def series_of(job_id: str, stream: JobStream) -> LossSeries:
    train = sorted(stream.train.items())
    evals = sorted(stream.evals.items())
    return LossSeries(job_id, tuple(float(s) for s, _ in train), tuple(v for _, v in train),
                      tuple(float(s) for s, _ in evals), tuple(v for _, v in evals))


# ---- which verbs exist ------------------------------------------------------------------------


def engine_availability() -> Availability:
    from engine import actions

    def missing(verb: str, words: str) -> str | None:
        return None if callable(getattr(actions, verb, None)) else \
            f"{words} is not part of this build (engine.actions.{verb} is missing)"

    methods: tuple[str, ...]
    try:
        from engine.compression.spec import METHODS
        methods = tuple(METHODS)
    except ImportError:
        methods = ()
    return Availability(missing("finetune", "fine-tuning"), missing("compress", "compression"),
                        missing("cancel_job", "cancelling jobs"), tuple(methods))
