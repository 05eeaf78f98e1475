"""`modeldeck tui --replay FILE`: the dashboard over a flight recording (written by `modeldeck
record` or `[console] record`; read by engine.telemetry.recorder).

RecordingSource is a DataSource whose every read is of the frame the playback is at; the panes
render it through the same adapters as live data (console.adapters), so a replay looks as the
console looked. ReplayDashboard is the dashboard with the playback keys, a status line and a
seek field; it is read-only: every action is refused with the reason. (console/replay.py is a
different thing: fixed, made-up data for snapshot tests.)
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from console import present
from console.adapters import (JobReader, endpoint_row, gpu_panel, host_view, local_row,
                              rollout_view)
from console.data import (LOCAL_ENDPOINT, Availability, DeckInfo, DeploymentRow, EndpointsPanel,
                          EventsPanel, GpuPanel, JobsPanel, LossSeries, ModelsPanel)
from console.sources import audit_events, model_row
from engine.deck import Deck

SPEEDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
REPLAY_REFUSAL = "replay of a recording: actions are disabled (the recording cannot change)"


class Playback:
    """Where a replay is: a moment of the recording, playing (moving with the clock times the
    speed) or paused. Thread-safe: the panes read it from worker threads."""

    def __init__(self, times: list[float], clock: Callable[[], float] = time.monotonic) -> None:
        self.times, self.clock = times, clock
        self.lock = threading.Lock()
        self.moment, self.anchor = times[0], clock()
        self.playing, self.speed = False, 1.0

    def now(self) -> float:
        with self.lock:
            return self._now()

    def _now(self) -> float:
        if not self.playing:
            return self.moment
        moment = self.moment + (self.clock() - self.anchor) * self.speed
        if moment >= self.times[-1]:  # the end: stop there
            self.moment, self.playing = self.times[-1], False
            return self.moment
        return moment

    def _settle(self) -> None:
        self.moment, self.anchor = self._now(), self.clock()

    def index(self) -> int:
        return max(0, bisect_right(self.times, self.now()) - 1)

    def toggle(self) -> None:
        with self.lock:
            self._settle()
            if not self.playing and self.moment >= self.times[-1]:
                self.moment = self.times[0]  # played to the end: from the start again
            self.playing = not self.playing

    def step(self, frames: int) -> None:
        """One frame on or back, paused (as a video player steps)."""
        with self.lock:
            self._settle()
            current = max(0, bisect_right(self.times, self.moment) - 1)
            self.moment = self.times[min(len(self.times) - 1, max(0, current + frames))]
            self.playing = False

    def seek(self, moment: float) -> None:
        with self.lock:
            self._settle()
            self.moment = min(self.times[-1], max(self.times[0], moment))

    def set_speed(self, speed: float) -> None:
        with self.lock:
            self._settle()
            self.speed = min(SPEEDS[-1], max(SPEEDS[0], speed))


class RecordedJobs:
    """engine.jobs as a recording saw it at one frame: what JobReader reads (a job's
    `directory` is its id; an event offset counts events)."""

    def __init__(self, recording: Any, index: int) -> None:
        self.recording, self.index = recording, index

    def list_jobs(self, deck: Deck) -> list[Any]:
        from engine.jobs import JobInfo

        names = {item.name for item in fields(JobInfo)}
        return [JobInfo(**{**{key: value for key, value in job.items() if key in names},
                           "directory": job["id"]})
                for job in self.recording.jobs_at(self.index)]

    def read_events(self, directory: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        events = self.recording.events_until(Path(directory).name, self.index)
        return events[offset:], len(events)

    def job_directory(self, deck: Deck, job_id: str) -> Path:
        return Path(job_id)


class RecordingSource:
    """The panes' DataSource over a recording, at the playback's frame."""

    def __init__(self, recording: Any, deck: Deck,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recording, self.deck = recording, deck
        self.playback = Playback(recording.times, clock)
        self.lock = threading.Lock()
        self.job_reader, self.job_reader_index = JobReader(), -1
        self.cached: tuple[int, Any] | None = None

    def index(self) -> int:
        return self.playback.index()

    def snapshot(self, index: int) -> Any:
        with self.lock:
            if self.cached is None or self.cached[0] != index:
                self.cached = (index, self.recording.snapshot(index))
            return self.cached[1]

    def gpus(self) -> GpuPanel:
        snapshot = self.snapshot(self.index())
        return gpu_panel(snapshot.gpus, host_view(snapshot.host))

    def endpoints(self) -> EndpointsPanel:
        index = self.index()
        server = self.recording.servers[index] or {"state": "stopped"}
        rows = tuple(endpoint_row(endpoint) for endpoint in self.snapshot(index).endpoints)
        local, warnings = local_row(self.deck, next(
            (row for row in rows if row.name == LOCAL_ENDPOINT), None), server,
            self.recording.times[index])
        others = tuple(row for row in rows if row.name != LOCAL_ENDPOINT)
        return EndpointsPanel("ok", "", (local, *others), warnings, self.recording.window_s,
                              self.recording.interval_s, rollout_view(server.get("rollout")))

    def models(self) -> ModelsPanel:
        from engine.registry.records import Deployment, VersionInfo

        models = self.recording.models_at(self.index())
        deployments = [_record(Deployment, row) for row in models.get("deployments", ())]
        serving: dict[str, list[str]] = {}
        for deployment in deployments:
            serving.setdefault(deployment.ref, []).append(deployment.target)
        versions = sorted((_record(VersionInfo, row) for row in models.get("versions", ())),
                          key=lambda version: (version.model, -version.version))
        return ModelsPanel(tuple(model_row(version, tuple(serving.get(version.ref, ())))
                                 for version in versions),
                           tuple(DeploymentRow(d.target, d.ref, d.state) for d in deployments),
                           tuple(sorted({d.target for d in deployments} | {"local"})))

    def job_view(self) -> tuple[JobReader, RecordedJobs]:
        """A JobReader carried forward while the replay moves on, a new one when it goes back."""
        index = self.index()
        with self.lock:
            if index < self.job_reader_index:
                self.job_reader = JobReader()
            self.job_reader_index = index
            return self.job_reader, RecordedJobs(self.recording, index)

    def jobs(self) -> JobsPanel:
        reader, recorded = self.job_view()
        return reader.jobs(recorded, self.deck)  # type: ignore[arg-type]

    def loss(self, job_id: str | None) -> LossSeries:
        reader, recorded = self.job_view()
        return reader.loss(recorded, self.deck, job_id)  # type: ignore[arg-type]

    def events(self) -> EventsPanel:
        from engine.registry.records import AuditEntry

        rows = self.recording.audit_until(self.index())
        return EventsPanel(audit_events([_record(AuditEntry, row) for row in rows], {}))

    def availability(self) -> Availability:
        return Availability()  # every action is refused anyway (REPLAY_REFUSAL)

    def deck_info(self) -> DeckInfo:
        recorded = self.recording.deck
        return DeckInfo(str(recorded.get("host") or "?"),
                        present.home_path(str(recorded.get("home") or "")))

    def status_line(self) -> str:
        """`REPLAY 2026-11-26 03:12:04  frame 12/300  +0:11 of 5:00  2x  paused`."""
        index, recording, playback = self.index(), self.recording, self.playback
        moment = recording.times[index]  # the time of the frame on screen
        state = "playing" if playback.playing else "paused"
        line = (f"REPLAY {present.when(moment, seconds=True)}  frame {index + 1}/{len(recording)}"
                f"  +{_span(moment - recording.start)} of {_span(recording.end - recording.start)}"
                f"  {playback.speed:g}x  {state}")
        if recording.torn:
            line += f"  ({recording.torn} torn line{'s' if recording.torn > 1 else ''} skipped)"
        return line + "   space play/pause  , . step  : seek  - + speed"

    def seek(self, text: str) -> None:
        """BadInput (one line) for a time the recording cannot be sought to."""
        from engine.telemetry.recorder import parse_seek

        self.playback.seek(parse_seek(text, self.recording.start, self.recording.end))


def _record(cls: type, row: dict[str, Any]) -> Any:
    """An engine record from its to_dict() (keys it does not take, like `ref`, left out)."""
    names = {item.name for item in fields(cls)}
    return cls(**{key: tuple(value) if key == "aliases" else value
                  for key, value in row.items() if key in names})


def _span(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:0{2 if hours else 1}d}:{rest % 60:02d}"


def open_replay(path: str, deck: Deck) -> RecordingSource:
    """The source for `tui --replay`; BadInput for a file that is not a recording."""
    from engine.actions.telemetry import open_recording

    return RecordingSource(open_recording(Path(path).expanduser()), deck)
