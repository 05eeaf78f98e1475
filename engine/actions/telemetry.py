"""Telemetry verbs: watch, endpoints list|check, record (the flight recorder) and reading a
recording back for replay."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.errors import BadInput, brief


@dataclass(frozen=True)
class EndpointInfo:
    """An endpoint as configured. Where its API key comes from is shown, never the key."""

    name: str
    kind: str
    url: str
    model: str | None
    verify_tls: bool
    timeout_s: float
    api_key_env: str | None
    api_key_file: str | None
    secret_configured: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_endpoints(deck: Deck) -> list[EndpointInfo]:
    return [EndpointInfo(e.name, e.kind, e.url, e.model, e.verify_tls, e.timeout_s, e.api_key_env,
                         str(e.api_key_file) if e.api_key_file else None, e.secret_configured)
            for e in deck.config.endpoints]


@dataclass(frozen=True)
class CheckEndpointsRequest:
    names: tuple[str, ...] = ()  # empty: every configured endpoint
    window_s: float = 0.0  # > 0: scrape twice this far apart, for rates and percentiles


@dataclass(frozen=True)
class EndpointsCheck:
    endpoints: tuple[Any, ...]  # engine.telemetry.EndpointSnapshot
    models: tuple[Any, ...]  # engine.telemetry.ModelStats

    @property
    def all_reachable(self) -> bool:
        return all(endpoint.status != "down" for endpoint in self.endpoints)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoints": [e.to_dict() for e in self.endpoints],
                "models": [m.to_dict() for m in self.models]}


def check_endpoints(deck: Deck, request: CheckEndpointsRequest) -> EndpointsCheck:
    """Probe and scrape endpoints concurrently; down ones are data in the result."""
    from engine.remote.poller import EndpointPoller

    configured = {e.name: e for e in deck.config.endpoints}
    unknown = [name for name in request.names if name not in configured]
    if unknown:
        raise BadInput(f"no endpoint named {unknown[0]!r} in deck.toml")
    if not 0 <= request.window_s <= 300:
        raise BadInput("--window must be between 0 and 300 seconds")
    chosen = [configured[name] for name in request.names] or list(configured.values())
    poller = EndpointPoller(chosen)
    try:
        snapshots = poller.poll_blocking()
        if request.window_s > 0 and chosen:  # nothing to measure: no reason to wait
            time.sleep(request.window_s)
            snapshots = poller.poll_blocking()
        return EndpointsCheck(snapshots, poller.models())
    finally:
        poller.close()


@dataclass(frozen=True)
class WatchRequest:
    interval_s: float | None = None  # None: [telemetry] interval_s
    count: int | None = None  # None: until interrupted
    gpu_replay: Path | None = None  # recorded NVML readings instead of NVML (tests, demos)
    remote: bool = True  # endpoints and Prometheus; False: this box only


def watch(deck: Deck, request: WatchRequest) -> Any:
    """Yield one TelemetrySnapshot per interval (a generator; stop by closing it)."""
    from engine.telemetry import build_sampler
    from engine.telemetry.gpu import ReplaySource

    if request.interval_s is not None and not 0.05 <= request.interval_s <= 3600:
        raise BadInput("--interval must be between 0.05 and 3600 seconds")
    if request.count is not None and request.count < 1:
        raise BadInput("--count must be at least 1")
    replay = None
    if request.gpu_replay is not None:
        try:
            replay = ReplaySource.from_file(request.gpu_replay)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise BadInput(f"cannot replay GPU readings from {request.gpu_replay}: {error}") from None
    return _watch_ticks(build_sampler(deck, replay, request.interval_s, request.remote),
                        request.count)


def _watch_ticks(sampler: Any, count: int | None) -> Any:
    with sampler:
        deadline = time.monotonic()
        number = 0
        while count is None or number < count:
            if number:
                deadline += sampler.interval_s
                time.sleep(max(0.0, deadline - time.monotonic()))
            yield sampler.tick()
            number += 1


# ---- the flight recorder ----------------------------------------------------------------------

DEFAULT_MAX_BYTES = 64 << 20  # then FILE is gzipped to FILE.1.gz (a line is tens of kB at most)
KEYFRAME_JOBS = 50  # jobs whose events a keyframe carries (the newest)
KEYFRAME_EVENTS = 2000  # events per job in a keyframe (a long run's newest loss points)
KEYFRAME_AUDIT = 100  # audit rows in a keyframe: what the console's Events pane shows
TICK_AUDIT = 20  # audit rows read per tick (more when all of them are new)
RECORDED_EVENTS = ("progress", "eval")  # what the Jobs and Loss panes are drawn from


@dataclass(frozen=True)
class RecordRequest:
    path: Path
    watch: WatchRequest = WatchRequest()  # interval, count, replayed GPUs, local only
    max_bytes: int | None = DEFAULT_MAX_BYTES  # None: never rotate
    keep: int = 5  # rotated files kept (FILE.1.gz newest)


@dataclass(frozen=True)
class RecordProgress:
    path: str
    frames: int
    bytes_written: int
    rotated: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rotated": list(self.rotated)}


def record(deck: Deck, request: RecordRequest) -> Any:
    """`modeldeck record`: a recording line per sampler tick (engine.telemetry.recorder says
    what a line holds). A generator of RecordProgress, one per line; close it to stop.
    Everything is checked (BadInput) before the sampler starts or a byte is written."""
    from engine.telemetry.recorder import check_appendable

    if request.max_bytes is not None and request.max_bytes < 4096:
        raise BadInput("--max-bytes must be at least 4096")
    if not 1 <= request.keep <= 1000:
        raise BadInput("--keep must be between 1 and 1000")
    check_appendable(Path(request.path))
    return _record_ticks(deck, request, watch(deck, request.watch))


def _record_ticks(deck: Deck, request: RecordRequest, ticks: Any) -> Any:
    from engine.telemetry.recorder import RecordingWriter
    from engine.telemetry.sampler import RATE_WINDOW_S

    collector = FrameCollector(deck)
    try:
        with RecordingWriter(Path(request.path), request.max_bytes, request.keep) as writer:
            frames = written = 0
            for snapshot in ticks:
                writer.rotate_if_full()
                written += writer.write(collector.frame(snapshot, writer.fresh, RATE_WINDOW_S))
                frames += 1
                yield RecordProgress(str(request.path), frames, written,
                                     tuple(str(path) for path in writer.rotated))
    finally:
        ticks.close()


def open_recording(path: Path) -> Any:
    """`modeldeck tui --replay`: the recording and its rotated files, read (BadInput for a
    file that is not one, or of a schema version this build does not read)."""
    from engine.telemetry.recorder import read_recording

    return read_recording(Path(path))


@dataclass(frozen=True)
class _JobMark:
    state: str
    updated_at: float
    reason: str | None
    terminal: bool
    stamp: int  # state.json's mtime: a finished job changes only when it is resumed


class FrameCollector:
    """What a line carries besides the telemetry, read from the deck each tick: what is new or
    changed since the line before (everything in a keyframe). Its own Deck per thread."""

    def __init__(self, deck: Deck) -> None:
        self.deck = deck
        self.audit_results: dict[int, str] = {}
        self.job_marks: dict[str, _JobMark] = {}
        self.event_offsets: dict[str, int] = {}
        self.models_key: str | None = None

    def frame(self, snapshot: Any, keyframe: bool, window_s: float | None) -> dict[str, Any]:
        from engine.telemetry.recorder import SCHEMA_KEY, SCHEMA_VERSION, recorded_telemetry

        audit = self.audit_rows(keyframe)
        frame: dict[str, Any] = {SCHEMA_KEY: SCHEMA_VERSION, "at": time.time(),
                                 "interval_s": snapshot.interval_s, "window_s": window_s,
                                 "telemetry": recorded_telemetry(snapshot),
                                 "server": self.server(), "audit": audit}
        frame.update(self.jobs(keyframe))
        models = self.models(keyframe, bool(audit))
        if models is not None:
            frame["models"] = models
        if keyframe:
            import socket

            frame["deck"] = {"host": socket.gethostname(), "home": str(self.deck.paths.home)}
        return frame

    def server(self) -> dict[str, Any]:
        from engine.actions.rollouts import rollout_state
        from engine.actions.status_report import local_server_state

        state = local_server_state(self.deck)
        state.pop("engine", None)  # what it runs on does not change while it runs
        state["rollout"] = rollout_state(self.deck).rollout if state["state"] == "running" else None
        return state

    def audit_rows(self, keyframe: bool) -> list[dict[str, Any]]:
        """New rows, and rows whose result changed (a deploy's pending -> ok), oldest first."""
        limit = KEYFRAME_AUDIT if keyframe else TICK_AUDIT
        rows = self.deck.registry.audit(limit)
        while (not keyframe and len(rows) == limit and rows[-1].id not in self.audit_results
               and self.audit_results and limit < 10_000):
            limit *= 4  # a burst: read back to a row already recorded
            rows = self.deck.registry.audit(limit)
        changed = [row for row in reversed(rows)
                   if keyframe or self.audit_results.get(row.id) != row.result]
        for row in changed:
            self.audit_results[row.id] = row.result
        if len(self.audit_results) > 4 * KEYFRAME_AUDIT:  # only recent rows still change
            for old in sorted(self.audit_results)[:-KEYFRAME_AUDIT]:
                del self.audit_results[old]
        return [row.to_dict() for row in changed]

    def models(self, keyframe: bool, audited: bool) -> dict[str, Any] | None:
        """The versions and deployments when they changed: only an audited action changes them."""
        if not (keyframe or audited or self.models_key is None):
            return None
        registry = self.deck.registry
        models = {"versions": [version.to_dict() for version in registry.versions()],
                  "deployments": [deployment.to_dict() for deployment in registry.deployments()]}
        key = json.dumps(models, sort_keys=True, default=str)
        if key == self.models_key and not keyframe:
            return None
        self.models_key = key
        return models

    def jobs(self, keyframe: bool) -> dict[str, Any]:
        from engine import jobs as jobs_module

        folder = self.deck.paths.jobs
        listed = sorted(folder.iterdir()) if folder.is_dir() else []
        marked = [mark for mark in (self._changed_job(jobs_module, directory, keyframe)
                                    for directory in listed) if mark is not None]
        # A keyframe carries the loss curves of running jobs and of the newest others.
        newest = {job.id for job, _ in sorted(marked, key=lambda mark: mark[0].created_at)
                  [-KEYFRAME_JOBS:]}
        changed, events = [], {}
        for job, moved in marked:
            if moved:
                changed.append(job.to_dict())
            if keyframe:
                self.event_offsets[job.id] = 0
                if job.terminal and job.id not in newest:
                    continue
            if moved or not job.terminal:
                new = self._job_events(jobs_module, job, keyframe)
                if new:
                    events[job.id] = new
        return {"jobs": changed, "job_events": events}

    def _changed_job(self, jobs_module: Any, directory: Path, keyframe: bool) -> Any:
        """(job, whether it changed) for a job worth reading this tick, else None."""
        known = self.job_marks.get(directory.name)
        stamp = _mtime_ns(directory / "state.json")
        if known is not None and known.terminal and known.stamp == stamp and not keyframe:
            return None  # finished and untouched: the common case, one stat per tick
        try:
            job = jobs_module.get_job(self.deck.paths, directory.name)
        except (BadInput, OSError, ValueError):
            return None  # not a job directory (yet): spec.json is written first
        mark = _JobMark(job.state, job.updated_at, job.reason, job.terminal, stamp)
        self.job_marks[job.id] = mark
        return job, keyframe or mark != known

    def _job_events(self, jobs_module: Any, job: Any, keyframe: bool) -> list[dict[str, Any]]:
        events, self.event_offsets[job.id] = jobs_module.read_events(
            Path(job.directory), self.event_offsets.get(job.id, 0))
        kept = [event for event in events if event.get("type") in RECORDED_EVENTS]
        return kept[-KEYFRAME_EVENTS:] if keyframe else kept


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class RecorderThread:
    """The console's recorder (deck.toml [console] record): a line per sampler tick, taken from
    the sampler the console already runs (`latest` returns its snapshot, or None before it
    has started), so nothing is read twice. A failing write stops the recording and is kept
    in `problem`; it never reaches the console's own threads."""

    def __init__(self, deck: Deck, path: Path, latest: Any, interval_s: float,
                 max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        from engine.telemetry.recorder import check_appendable

        check_appendable(Path(path))  # BadInput at start, before the console opens
        self.deck, self.path, self.latest = deck, Path(path), latest
        self.interval_s, self.max_bytes = interval_s, max_bytes
        self.problem: str | None = None
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modeldeck-recorder", daemon=True)

    def start(self) -> "RecorderThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        from engine.telemetry.recorder import RecordingWriter
        from engine.telemetry.sampler import RATE_WINDOW_S

        deck = Deck(self.deck.paths, self.deck.config_file, self.deck._config)  # this thread's
        collector, last_sequence = FrameCollector(deck), None
        try:
            with RecordingWriter(self.path, self.max_bytes) as writer:
                while not self._stop.wait(self.interval_s):
                    snapshot = self.latest()
                    if snapshot is None or snapshot.sequence == last_sequence:
                        continue  # nothing new since the last line
                    last_sequence = snapshot.sequence
                    writer.rotate_if_full()
                    writer.write(collector.frame(snapshot, writer.fresh, RATE_WINDOW_S))
                    self.frames += 1
        except Exception as error:  # a full disk must not take the console down
            self.problem = f"recording to {self.path} stopped: {brief(error, named=True)}"
        finally:
            deck.close()
