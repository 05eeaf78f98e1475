"""The flight recorder's file format: one JSON line per tick, written with size rotation, and
read back for replay. What goes into a line is gathered by engine.actions.telemetry (it reads
the registry, the jobs and the local server); this module only writes and reads.

A line is a JSON object with `"modeldeck_recording": 1` (the schema version) and:
- `at` (time.time() of the tick), `interval_s`, `window_s` (the sampler's rate window);
- `telemetry`: TelemetrySnapshot.to_dict(), what `modeldeck watch --json` prints, less its
  history tuples (`utilization_history`, `cpu_history`, `tokens_history`): each is the series of
  earlier lines, so the reader rebuilds them and a line stays small;
- `server`: the local server's state (engine.actions.local_server_state) and its rollout;
- `jobs`: jobs that are new or changed since the previous line (JobInfo.to_dict());
  `job_events`: their progress/eval events since the previous line, by job id;
- `audit`: audit rows new since the previous line, or whose result changed (pending -> ok);
- `models` (only when it changed): the registry's versions and deployments.
The first line of each file is a keyframe: it also carries `deck` (host, home), every job, the
newest audit rows and the models, so a file replays on its own after older ones are deleted.

Rotation: before a line would take the file past `max_bytes`, FILE is gzip-compressed to
FILE.1.gz (FILE.1.gz moving to FILE.2.gz, and so on, `keep` files kept). A reader of FILE reads
FILE.N.gz ... FILE.1.gz, then FILE; a reader of one .gz file reads that file.
A line a crash cut short is skipped (counted in `torn`), never fatal; a writer that reopens a
file ending in such a line starts on a new line.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.snapshots import GpuDevice, TelemetrySnapshot

SCHEMA_KEY = "modeldeck_recording"
SCHEMA_VERSION = 1
DEFAULT_KEEP = 5
HISTORY_POINTS = 600  # rebuilt histories: as many points as the sampler keeps by default
FIRST_LINE_LIMIT = 1 << 24  # a first line longer than this is not one of ours
LINE_PREFIX = b'{"' + SCHEMA_KEY.encode() + b'":'  # every line starts so (the key goes first)


# ---- writing ----------------------------------------------------------------------------------


class RecordingWriter:
    """Appends lines to `path`, rotating by size. `fresh` is True while the current file is
    empty: the next line must be a keyframe."""

    def __init__(self, path: Path, max_bytes: int | None = None, keep: int = DEFAULT_KEEP) -> None:
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        check_appendable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("ab")
        self.size = self.handle.tell()
        if self.size and not _ends_with_newline(self.path):
            self._put(b"\n")  # a line a crash cut short stays a line of its own, skipped on read
        self.last_line_bytes = 0
        self.rotated: list[Path] = []

    @property
    def fresh(self) -> bool:
        return self.size == 0

    def rotate_if_full(self) -> None:
        """Before building the next line: rotate when it would not fit (judged by the last)."""
        if self.max_bytes and self.size and self.size + self.last_line_bytes > self.max_bytes:
            self.rotate()

    def write(self, frame: dict[str, Any]) -> int:
        line = encode_line(frame)
        self._put(line)
        self.last_line_bytes = len(line)
        return len(line)

    def _put(self, data: bytes) -> None:
        self.handle.write(data)
        self.handle.flush()  # a crash of this process loses at most the line being written
        self.size += len(data)

    def rotate(self) -> None:
        self.handle.close()
        rotated = rotated_name(self.path, 1)
        for number in range(self.keep, 0, -1):
            older = rotated_name(self.path, number)
            if older.exists():
                if number == self.keep:
                    older.unlink()
                else:
                    older.replace(rotated_name(self.path, number + 1))
        partial = rotated.with_name(rotated.name + ".part")
        with self.path.open("rb") as source, gzip.open(partial, "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target)
        partial.replace(rotated)  # whole or absent: a reader never sees half a .gz
        self.path.unlink()
        self.rotated.append(rotated)
        self.handle = self.path.open("ab")
        self.size = 0

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def encode_line(frame: dict[str, Any]) -> bytes:
    return (json.dumps(frame, separators=(",", ":"), default=str) + "\n").encode()


def rotated_name(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}.gz")


def check_appendable(path: Path) -> None:
    """A file that exists must be a recording: `record` appends, and must never append to (and
    so damage) some other file given by mistake. BadInput before anything is written."""
    if path.is_dir():
        raise BadInput(f"{path} is a directory, not a recording file")
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as handle:
        first = handle.readline(FIRST_LINE_LIMIT)
    if not first.startswith(LINE_PREFIX):
        raise BadInput(f"{path} exists and is not a modeldeck recording: refusing to append "
                       "to it")
    if first.endswith(b"\n"):
        _checked_line(first, path, 1)  # a schema this build does not write: not appended to


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def recorded_telemetry(snapshot: TelemetrySnapshot) -> dict[str, Any]:
    """snapshot.to_dict() less its history tuples (the reader rebuilds them from the lines
    before). They are emptied before to_dict(): copying 600-point histories only to drop them
    was most of a line's cost."""
    fleet = snapshot.fleet
    emptied = replace(
        snapshot, gpus=replace(snapshot.gpus, devices=_without_history(snapshot.gpus.devices)),
        host=replace(snapshot.host, cpu_history=()) if snapshot.host is not None else None,
        endpoints=tuple(replace(endpoint, tokens_history=()) for endpoint in snapshot.endpoints),
        fleet=replace(fleet, gpus=_without_history(fleet.gpus)) if fleet is not None else None)
    telemetry = emptied.to_dict()
    for device in telemetry["gpus"]["devices"]:
        del device["utilization_history"]
    if telemetry["host"] is not None:
        del telemetry["host"]["cpu_history"]
    for endpoint in telemetry["endpoints"]:
        del endpoint["tokens_history"]
    for device in (telemetry["fleet"] or {}).get("gpus", ()):
        del device["utilization_history"]
    return telemetry


def _without_history(devices: tuple[GpuDevice, ...]) -> tuple[GpuDevice, ...]:
    return tuple(replace(device, utilization_history=()) for device in devices)


# ---- reading ----------------------------------------------------------------------------------


@dataclass
class Recording:
    """A recording read into memory: each frame's raw line (its telemetry parsed on demand) and,
    parsed once, what replay accumulates: audit rows, jobs, job events, models, history series."""

    files: tuple[Path, ...]
    times: list[float] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    servers: list[dict[str, Any]] = field(default_factory=list)
    audit: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    jobs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    job_events: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    models: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    deck: dict[str, Any] = field(default_factory=dict)
    window_s: float | None = None
    interval_s: float | None = None
    torn: int = 0  # lines skipped: cut short by a crash, or not JSON

    def __len__(self) -> int:
        return len(self.times)

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        return self.times[-1]

    def index_at(self, moment: float) -> int:
        """The last frame at or before `moment` (the first frame before the start)."""
        return max(0, bisect_right(self.times, moment) - 1)

    def snapshot(self, index: int) -> TelemetrySnapshot:
        """The frame's telemetry as the sampler published it, histories rebuilt."""
        telemetry = json.loads(self.lines[index])["telemetry"]
        return snapshot_from_dict(self._with_histories(telemetry, index))

    def audit_until(self, index: int) -> list[dict[str, Any]]:
        """Every audit row recorded up to the frame, each as its latest line had it, newest first."""
        rows: dict[int, dict[str, Any]] = {}
        for frame, row in self.audit:
            if frame > index:
                break
            rows[row["id"]] = row
        return sorted(rows.values(), key=lambda row: -row["id"])

    def jobs_at(self, index: int) -> list[dict[str, Any]]:
        known: dict[str, dict[str, Any]] = {}
        for frame, job in self.jobs:
            if frame > index:
                break
            known[job["id"]] = job
        return sorted(known.values(), key=lambda job: job.get("created_at") or 0.0)

    def events_until(self, job_id: str, index: int) -> list[dict[str, Any]]:
        return [event for frame, event in self.job_events.get(job_id, ()) if frame <= index]

    def models_at(self, index: int) -> dict[str, Any]:
        latest: dict[str, Any] = {}
        for frame, models in self.models:
            if frame > index:
                break
            latest = models
        return latest

    def _with_histories(self, telemetry: dict[str, Any], index: int) -> dict[str, Any]:
        for device in telemetry["gpus"]["devices"]:
            device["utilization_history"] = self.history(f"gpu.{device['index']}", index)
        if telemetry.get("host"):
            telemetry["host"]["cpu_history"] = self.history("host", index)
        for endpoint in telemetry.get("endpoints", ()):
            endpoint["tokens_history"] = self.history(f"endpoint.{endpoint['name']}", index)
        if telemetry.get("fleet"):
            for device in telemetry["fleet"]["gpus"]:
                device["utilization_history"] = self.history(
                    f"fleet.{device.get('host')}.{device['index']}", index)
        return telemetry

    def history(self, series: str, index: int) -> list[float]:
        """The series' values of the frames up to `index` (the newest HISTORY_POINTS frames)."""
        values = self.series.get(series, {})
        return [values[frame] for frame in range(max(0, index - HISTORY_POINTS + 1), index + 1)
                if frame in values]


def recording_files(path: Path) -> list[Path]:
    """FILE.N.gz ... FILE.1.gz, FILE (oldest first); a .gz path: that file alone."""
    if path.name.endswith(".gz"):
        return [path]
    rotated = []
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)\.gz")
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = pattern.fullmatch(candidate.name)
            if match:
                rotated.append((int(match.group(1)), candidate))
    return [file for _, file in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def read_recording(path: Path) -> Recording:
    """A recording and its rotated files. BadInput (one line) for a file that is not a
    recording, a schema version this build does not read, or no complete line at all."""
    files = recording_files(Path(path))
    if not files:
        raise BadInput(f"{path}: no such recording")
    recording = Recording(tuple(files))
    for file in files:
        for number, raw in enumerate(_lines(file), 1):
            _add_line(recording, raw, file, number)
    if not recording.times:
        raise BadInput(f"{path}: no complete line to replay (the recording is empty)")
    return recording


def _lines(file: Path) -> Iterator[bytes]:
    try:
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rb") as handle:
            yield from handle
    except (OSError, EOFError) as error:  # an unreadable or truncated .gz: one line, exit 2
        raise BadInput(f"{file}: cannot read it ({error})") from None


def _add_line(recording: Recording, raw: bytes, file: Path, number: int) -> None:
    if not raw.strip():
        return
    if not raw.startswith(LINE_PREFIX) and number == 1:
        raise BadInput(f"{file}: not a modeldeck recording (its first line is not one)")
    line = _checked_line(raw, file, number)
    if line is None:
        recording.torn += 1  # cut short by a crash (or damaged): skipped, the rest replays
        return
    index = len(recording.times)
    recording.times.append(float(line["at"]))
    recording.lines.append(raw)
    recording.servers.append(line.get("server") or {})
    recording.deck = line.get("deck") or recording.deck
    recording.window_s = line.get("window_s", recording.window_s)
    recording.interval_s = line.get("interval_s", recording.interval_s)
    recording.audit.extend((index, row) for row in line.get("audit", ()))
    recording.jobs.extend((index, job) for job in line.get("jobs", ()))
    for job_id, events in (line.get("job_events") or {}).items():
        recording.job_events.setdefault(job_id, []).extend((index, event) for event in events)
    if line.get("models") is not None:
        recording.models.append((index, line["models"]))
    _add_series(recording.series, line["telemetry"], index)


def _checked_line(raw: bytes, file: Path, number: int) -> dict[str, Any] | None:
    """The line, or None for one that cannot be used (cut short, damaged). BadInput for a
    schema version this build does not read."""
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(line, dict) or SCHEMA_KEY not in line:
        return None
    if line[SCHEMA_KEY] != SCHEMA_VERSION:
        raise BadInput(f"{file}: recording schema version {line[SCHEMA_KEY]!r} is not one this "
                       f"modeldeck reads (it reads {SCHEMA_VERSION})")
    if not isinstance(line.get("at"), (int, float)) or not isinstance(line.get("telemetry"), dict):
        return None
    return line


def _add_series(series: dict[str, dict[int, float]], telemetry: dict[str, Any], index: int) -> None:
    """The values the sampler keeps histories of, as it keeps them (None left out)."""
    def add(name: str, value: Any) -> None:
        if isinstance(value, (int, float)):
            series.setdefault(name, {})[index] = value

    for device in (telemetry.get("gpus") or {}).get("devices", ()):
        add(f"gpu.{device.get('index')}", device.get("utilization_pct"))
    add("host", (telemetry.get("host") or {}).get("cpu_pct"))
    for endpoint in telemetry.get("endpoints", ()):
        add(f"endpoint.{endpoint.get('name')}", endpoint.get("tokens_per_s"))
    for device in (telemetry.get("fleet") or {}).get("gpus", ()):
        add(f"fleet.{device.get('host')}.{device.get('index')}", device.get("utilization_pct"))


# ---- a line's telemetry back into the snapshot classes ----------------------------------------


def snapshot_from_dict(data: dict[str, Any]) -> TelemetrySnapshot:
    """TelemetrySnapshot.to_dict() back into the snapshot (one shape, written and read: the
    snapshot classes' own from_dict, so a field added to them is replayed with no change here)."""
    return TelemetrySnapshot.from_dict(data)


# ---- seeking ----------------------------------------------------------------------------------


def parse_seek(text: str, start: float, end: float) -> float:
    """Where `text` points in a recording from `start` to `end` (unix times): `HH:MM[:SS]`
    (local time of day, its first time at or after the start), `+SECONDS` from the start,
    `-SECONDS` back from the end, or `YYYY-MM-DD HH:MM[:SS]`. BadInput for anything else."""
    text = text.strip()
    if re.fullmatch(r"[+-]\d+(\.\d+)?", text):
        offset = float(text)
        return start + offset if offset >= 0 else end + offset
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return time.mktime(time.strptime(text, pattern))
        except ValueError:
            continue
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text)
    if match is None:
        raise BadInput(f"cannot seek to {text[:40]!r}: give HH:MM[:SS], +SECONDS, -SECONDS "
                       "or YYYY-MM-DD HH:MM[:SS]")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    if hours > 23 or minutes > 59 or seconds > 59:
        raise BadInput(f"cannot seek to {text!r}: not a time of day")
    day = time.localtime(start)
    moment = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, hours, minutes, seconds, 0, 0, -1))
    return moment if moment >= start - 1 else moment + 86400  # the first such time from the start
