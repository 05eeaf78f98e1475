"""The alert log: <home>/alerts/events.jsonl, append-only, one JSON object a line (the format
of a job's event stream, written and read by engine.jobs' functions for it).

Records (all with "type": "alert", "t" (unix time), "at" (ISO 8601, UTC), "state", "rule"):
  fired       subject, kind, severity, message, values, bell
  resolved    the same, plus fired_at, duration_s and flaps (held again within suppress_s)
  undelivered a sink that gave up: sink (webhook | command), reason; never a secret or a URL's
              path and query (a token may hide there)
Several processes may append (whoever evaluates, and the sinks' threads): each record is one
write with O_APPEND, so lines never interleave. A torn last line (a crash mid-write) is skipped.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.jobs import append_event, read_events
from engine.paths import DeckPaths

STATES = ("fired", "resolved", "undelivered")


def log_directory(paths: DeckPaths) -> Path:
    return paths.home / "alerts"


def log_path(paths: DeckPaths) -> Path:
    return log_directory(paths) / "events.jsonl"  # jobs' stream format, read and written by it


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")


def append(paths: DeckPaths, record: dict[str, Any]) -> dict[str, Any]:
    at = record["t"] if record.get("t") is not None else time.time()
    log_directory(paths).mkdir(parents=True, exist_ok=True)
    fields = {key: value for key, value in record.items() if key not in ("t", "at")}
    return append_event(log_directory(paths), "alert", t=at, at=iso(at), **fields)


def read_from(paths: DeckPaths, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Whole records from byte `offset` on, and the offset after the last whole line."""
    events, offset = read_events(log_directory(paths), offset)
    return [event for event in events if event.get("state") in STATES], offset


def end_offset(paths: DeckPaths) -> int:
    try:
        return log_path(paths).stat().st_size
    except OSError:
        return 0


def still_firing(records: list[dict[str, Any]]) -> list[tuple[tuple[str, str], float]]:
    """(rule, subject) pairs whose last fired/resolved record is a fire, with when it fired."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record.get("state") in ("fired", "resolved"):
            last[(str(record.get("rule")), str(record.get("subject")))] = record
    return [(key, float(record["t"])) for key, record in last.items()
            if record["state"] == "fired"]


class Feed:
    """New records since it was made (or since the last call): what a console shows."""

    def __init__(self, paths: DeckPaths, from_start: bool = False) -> None:
        self.paths = paths
        self.offset = 0 if from_start else end_offset(paths)

    def new(self) -> list[dict[str, Any]]:
        records, self.offset = read_from(self.paths, self.offset)
        return records
