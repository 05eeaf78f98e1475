"""Thin adapters from the engine's telemetry and jobs modules to the console's view models.

An absent module (a build without it) or a failing read becomes 'not-available' or 'error'
data with the reason; nothing here raises into the UI. Called from thread workers only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from console.data import (LOCAL_ENDPOINT, Availability, EndpointRow, EndpointsPanel, GpuPanel,
                          GpuRow, HostView, JobRow, JobsPanel, LossSeries, ProcessRow,
                          RolloutView, VersionRow)
from console.loss_stream import LossStream
from engine.deck import Deck


# ---- GPUs, host and endpoints: one reader, the engine's sampler --------------------------------


class TelemetryReader:
    """The console's view of engine.telemetry's sampler (build_sampler(deck)): the same GPUs,
    host and endpoints (the local server included) as `modeldeck watch`, with the sampler's
    histories and windowed rates. Started on the first read, in a worker thread; its own
    threads sample every [telemetry] interval_s."""

    def __init__(self, deck: Deck, build: Any = None) -> None:
        self.deck = deck
        self.build = build  # tests: a function deck -> Sampler (replayed GPUs)
        self.sampler: Any = None
        self.problem: str | None = None
        self.lock = threading.Lock()

    def current(self) -> Any:
        with self.lock:
            if self.sampler is None and self.problem is None:
                try:
                    self.sampler = self.started(self.build or default_sampler)
                except Exception as error:  # a build without telemetry: shown as data
                    self.problem = f"telemetry failed to start: {error}"
            return self.sampler

    def started(self, build: Any) -> Any:
        sampler = build(self.deck).start()
        deadline = time.monotonic() + FIRST_SAMPLE_WAIT_S
        while sampler.latest().sequence == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the first paint shows readings, not "pending"
        return sampler

    def gpus(self) -> GpuPanel:
        sampler = self.current()
        if sampler is None:
            return GpuPanel("not-available", self.problem or "")
        snapshot = sampler.latest()
        return gpu_panel(snapshot.gpus, host_view(snapshot.host))

    def endpoints(self) -> EndpointsPanel:
        sampler = self.current()
        if sampler is None:
            return EndpointsPanel("not-available", self.problem or "")
        rows = tuple(endpoint_row(snapshot) for snapshot in sampler.latest().endpoints)
        local, warnings = local_row(self.deck, next(
            (row for row in rows if row.name == LOCAL_ENDPOINT), None))
        others = tuple(row for row in rows if row.name != LOCAL_ENDPOINT)
        rollout = local_rollout(self.deck) if local.status not in ("stopped", "starting") else None
        return EndpointsPanel("ok", "", (local, *others), warnings,
                              getattr(sampler, "rate_window_s", None),
                              getattr(sampler, "interval_s", None), rollout)

    def close(self) -> None:
        """Stops the sampler. In its own thread: the app calls this from its event loop, and
        the endpoint poller closes its connections on an event loop of its own."""
        with self.lock:
            sampler, self.sampler = self.sampler, None
        if sampler is not None:
            closing = threading.Thread(target=sampler.close, name="modeldeck-sampler-close",
                                       daemon=True)
            closing.start()
            closing.join(timeout=10)


FIRST_SAMPLE_WAIT_S = 2.0


def default_sampler(deck: Deck) -> Any:
    from engine.telemetry import build_sampler

    return build_sampler(deck)


def gpu_panel(gpus: Any, host: HostView | None) -> GpuPanel:
    rows = tuple(gpu_row(device) for device in gpus.devices)
    status = gpus.status if rows or gpus.status != "ok" else "no-gpu"
    if status == "pending":
        status = "ok"  # the sampler's first tick is under way: no rows for a moment
    return GpuPanel(status, gpus.reason or "", rows, host)


def gpu_row(device: Any) -> GpuRow:
    processes = tuple(ProcessRow(process.pid, process.name or "?", process.memory_bytes)
                      for process in device.processes)
    return GpuRow(device.index, device.name or "GPU", device.utilization_pct,
                  device.memory_used_bytes, device.memory_total_bytes, device.temperature_c,
                  device.power_w, tuple(device.utilization_history), processes,
                  diagnosis=_diagnosis_line(device))


def host_view(host: Any) -> HostView | None:
    if host is None or host.memory_total_bytes is None:
        return None
    return HostView(host.cpu_pct or 0.0, host.cpu_count, host.memory_used_bytes or 0,
                    host.memory_total_bytes, tuple(host.cpu_history))


def endpoint_row(snapshot: Any) -> EndpointRow:
    latency = tuple((label, getattr(snapshot, f"{key}_p50_s", None),
                     getattr(snapshot, f"{key}_p95_s", None), getattr(snapshot, f"{key}_p99_s", None))
                    for label, key in LATENCY_MEASURES)
    return EndpointRow(snapshot.name, snapshot.kind, snapshot.status, snapshot.reason or "",
                       snapshot.tokens_per_s, snapshot.requests_per_s, snapshot.ttft_p95_s,
                       _int(snapshot.running), _int(snapshot.waiting), snapshot.kv_cache_pct,
                       tuple(snapshot.tokens_history), str(snapshot.url or ""), latency,
                       snapshot.checked_at,
                       tuple(VersionRow(part.version, part.tokens_per_s, part.ttft_p95_s,
                                        part.requests, part.failed, getattr(part, "slo", None))
                             for part in getattr(snapshot, "versions", ())),
                       getattr(snapshot, "slo", None), diagnosis=_diagnosis_line(snapshot))


def _diagnosis_line(snapshot: Any) -> str:
    diagnosis = getattr(snapshot, "diagnosis", None)
    return diagnosis.line if diagnosis is not None else ""


def local_rollout(deck: Deck) -> RolloutView | None:
    """The local server's rollout while it is in progress, as its state file says (the
    engine's reader: no request to the server)."""
    from engine.actions import rollout_state

    return rollout_view(rollout_state(deck).rollout)


def rollout_view(state: dict[str, Any] | None) -> RolloutView | None:
    """A rollout state (run/rollout.json, or a recording's) while it is in progress."""
    if not state or state.get("status") not in ("running", "paused"):
        return None
    settings = state.get("settings") or {}
    return RolloutView(str(state["candidate"]), str(state.get("live") or "?"), str(state["status"]),
                       int(state.get("step", -1)),
                       tuple(float(step) for step in settings.get("steps") or ()),
                       float(state.get("weight") or 0.0), float(state.get("shadow") or 0.0),
                       str(state.get("message") or ""))


LATENCY_MEASURES = (("time to first token", "ttft"), ("inter-token", "itl"), ("end to end", "e2e"))
STARTING_GRACE_S = 120.0  # a server announced this recently that never answered is still starting


def local_row(deck: Deck, polled: EndpointRow | None, server: dict[str, Any] | None = None,
              now: float | None = None) -> tuple[EndpointRow, tuple[str, ...]]:
    """The local server's row, which is there even when it is down: stopped, starting (its
    start lock held while the model loads, or announced and not answering yet), or as polled.
    server / now: its state and the time (a replay's), instead of the deck's and the clock's."""
    from engine.actions import local_server_state  # the one reader, shared with `status`

    server = server if server is not None else local_server_state(deck)
    now = time.time() if now is None else now
    if server["state"] == "starting":
        return EndpointRow(LOCAL_ENDPOINT, "modeldeck", "starting",
                           "loading the model (a start is under way)"), ()
    if server["state"] != "running":
        reason = ("its pid is gone (stale run file)" if server["state"] == "stale"
                  else "not running: `s` or `modeldeck serve --detach` starts it")
        return EndpointRow(LOCAL_ENDPOINT, "modeldeck", "stopped", reason), ()
    warnings = tuple(server.get("warnings", ()))
    if polled is None:  # the sampler has not polled it yet
        polled = EndpointRow(LOCAL_ENDPOINT, "modeldeck", "stale", "not polled yet", url=server["url"])
    never_answered = polled.status in ("down", "stale") and not polled.tokens_history
    if never_answered and now - (server.get("started_at") or 0.0) < STARTING_GRACE_S:
        return replace(polled, status="starting",
                       reason="waiting for its first answer on /health"), warnings
    return polled, warnings


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---- jobs and loss ----------------------------------------------------------------------------


@dataclass
class JobStream:
    """What has been read of one job's events.jsonl: read on from `offset`, never twice."""

    offset: int = 0
    signals: LossStream = field(default_factory=LossStream)  # every signal, by step
    series: LossSeries | None = None

    @property
    def last_progress(self) -> dict[str, Any] | None:
        return self.signals.last_progress


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
                stream.signals.add(event)
            if events or stream.series is None:
                stream.series = stream.signals.series(job_id, directory / "checkpoints")
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


# ---- which verbs exist ------------------------------------------------------------------------


def engine_availability() -> Availability:
    from engine import actions

    def missing(verb: str, words: str) -> str | None:
        return None if callable(getattr(actions, verb, None)) else \
            f"{words} is not part of this build (engine.actions.{verb} is missing)"

    methods: tuple[str, ...] = ()
    try:
        from engine.compression.spec import METHODS

        methods = tuple(METHODS)
    except ImportError:
        pass
    return Availability(missing("finetune", "fine-tuning"), missing("compress", "compression"),
                        missing("cancel_job", "cancelling jobs"), methods)
