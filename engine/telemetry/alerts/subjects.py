"""What alert rules look at: the snapshot's GPUs, endpoints and host, plus the deck's jobs (from
their events.jsonl) and its rollout (run/rollout.json), each as a Subject whose fields a rule's
paths read. Reading is incremental: a job's events are read from the offset reached last time,
so a tick costs a stat per job, not a re-read of every stream.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from engine.job_worker import read_json  # the one reader of a job's small JSON files
from engine.jobs import read_events
from engine.paths import DeckPaths
from engine.snapshots import EndpointSnapshot, GpuDevice, TelemetrySnapshot

LOSS_WINDOW = 20  # progress events the loss's moving average covers
MIN_LOSS_HISTORY = 5  # a spike needs this many earlier losses to compare with
RECENT_S = 3600.0  # an ended job stays a subject this long (its NaN or regression can fire)
_DIVERGED = re.compile(r"became (nan|-?inf)", re.IGNORECASE)


@dataclass(frozen=True)
class Subject:
    kind: str
    id: str  # unique within its kind: "0", "node7:1", "vllm-a", a job id
    base: Any = None  # a snapshot dataclass whose attributes are fields
    derived: dict[str, Any] = field(default_factory=dict)

    def lookup(self, parts: tuple[str, ...]) -> Any:
        head, *rest = parts
        value = self.derived[head] if head in self.derived else getattr(self.base, head, None)
        for part in rest:  # nested: endpoint.slo.joint
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        return value

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


def gpu_subject(device: GpuDevice) -> Subject:
    used, total = device.memory_used_bytes, device.memory_total_bytes
    memory_pct = 100.0 * used / total if used is not None and total else None
    name = f"{device.host}:{device.index}" if device.host else str(device.index)
    return Subject("gpu", name, device, {"memory_pct": memory_pct})


def endpoint_subject(endpoint: EndpointSnapshot) -> Subject:
    return Subject("endpoint", endpoint.name, endpoint, {"state": endpoint.status})


def snapshot_subjects(snapshot: TelemetrySnapshot) -> list[Subject]:
    subjects = [gpu_subject(device) for device in snapshot.gpus.devices]
    if snapshot.fleet is not None:
        subjects += [gpu_subject(device) for device in snapshot.fleet.gpus]
    subjects += [endpoint_subject(endpoint) for endpoint in snapshot.endpoints]
    if snapshot.host is not None:
        subjects.append(Subject("host", "host", snapshot.host))
    return subjects


# ---- jobs ------------------------------------------------------------------------------------


@dataclass
class JobHealth:
    """One job's stream folded into the numbers training rules read."""

    id: str
    kind: str = ""
    created_at: float = 0.0
    state: str = "queued"
    reason: str | None = None
    state_at: float = 0.0
    offset: int = 0
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    last_step_at: float | None = None
    earlier_losses: deque = field(default_factory=lambda: deque(maxlen=LOSS_WINDOW))
    eval_losses: list = field(default_factory=list)

    def fold(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "state":
            self.state, self.reason = str(event.get("state")), event.get("reason")
            self.state_at = _number(event.get("t")) or self.state_at
        elif kind == "progress" and "loss" in event:
            if self.loss is not None and math.isfinite(self.loss):
                self.earlier_losses.append(self.loss)
            self.step, self.max_steps = event.get("step"), event.get("max_steps")
            self.loss, self.grad_norm = _number(event.get("loss")), _number(event.get("grad_norm"))
            self.tokens_per_s = _number(event.get("tokens_per_s"))
            self.last_step_at = _number(event.get("t"))
        elif kind == "eval" and _number(event.get("eval_loss")) is not None:
            self.eval_losses.append(_number(event.get("eval_loss")))

    def subject(self, now: float) -> Subject:
        average = (sum(self.earlier_losses) / len(self.earlier_losses)
                   if len(self.earlier_losses) >= MIN_LOSS_HISTORY else None)
        best = min(self.eval_losses[:-1]) if len(self.eval_losses) > 1 else None
        latest_eval = self.eval_losses[-1] if self.eval_losses else None
        non_finite = any(value is not None and not math.isfinite(value)
                         for value in (self.loss, self.grad_norm, latest_eval)) \
            or bool(self.reason and _DIVERGED.search(str(self.reason)))
        since = self.last_step_at or (self.state_at if self.state == "running" else None)
        return Subject("job", self.id, None, {
            "id": self.id, "kind": self.kind, "state": self.state, "reason": self.reason,
            "step": self.step, "max_steps": self.max_steps, "loss": self.loss,
            "loss_average": average, "loss_spike_ratio": _ratio(self.loss, average),
            "grad_norm": self.grad_norm, "non_finite": non_finite, "eval_loss": latest_eval,
            "eval_loss_best": best, "eval_loss_regression": _ratio(latest_eval, best),
            "seconds_since_step": now - since if self.state == "running" and since else None,
            "tokens_per_s": self.tokens_per_s, "age_s": now - self.created_at})


class JobWatcher:
    """The deck's jobs worth alerting on: running ones and those that ended within RECENT_S."""

    def __init__(self, paths: DeckPaths) -> None:
        self.paths = paths
        self.jobs: dict[str, JobHealth] = {}
        self.done: set[str] = set()  # ended long ago: never read again

    def subjects(self, now: float) -> list[Subject]:
        try:
            names = sorted(entry.name for entry in self.paths.jobs.iterdir() if entry.is_dir())
        except OSError:
            return []
        subjects = []
        for name in names:
            if name in self.done:
                continue
            health = self._read(name)
            if health is None:
                continue
            if health.state in ("finished", "failed", "cancelled") and now - health.state_at > RECENT_S:
                self.done.add(name)
                self.jobs.pop(name, None)
                continue
            subjects.append(health.subject(now))
        return subjects

    def _read(self, name: str) -> JobHealth | None:
        health = self.jobs.get(name)
        if health is None:
            spec = read_json(self.paths.jobs / name / "spec.json")
            if spec is None:
                return None  # still being created
            health = self.jobs[name] = JobHealth(name, str(spec.get("kind", "")),
                                                 _number(spec.get("created_at")) or 0.0)
        events, health.offset = read_events(self.paths.jobs / name, health.offset)
        for event in events:
            health.fold(event)
        return health


# ---- the rollout ------------------------------------------------------------------------------


def rollout_subjects(paths: DeckPaths, now: float) -> list[Subject]:
    state = read_json(paths.rollout_state)
    if state is None:
        return []
    failed = state.get("failed_gate")
    updated = _number(state.get("updated_at"))
    return [Subject("rollout", str(state.get("id", "rollout")), None, {
        "id": state.get("id"), "status": state.get("status"),
        "candidate": f"{state.get('model')}@{state.get('version')}", "live": state.get("live"),
        "step": state.get("step"), "weight": state.get("weight"), "message": state.get("message"),
        "failed_gate": failed.get("gate") if isinstance(failed, dict) else None,
        "seconds_since_update": now - updated if updated is not None else None})]


class SubjectReader:
    """Everything rules can look at, for one tick."""

    def __init__(self, paths: DeckPaths, kinds: set[str]) -> None:
        self.paths, self.kinds = paths, kinds
        self.jobs = JobWatcher(paths)

    def read(self, snapshot: TelemetrySnapshot, now: float) -> list[Subject]:
        subjects = snapshot_subjects(snapshot)
        if "job" in self.kinds:  # no job rule: no job files read
            subjects += self.jobs.subjects(now)
        if "rollout" in self.kinds:
            subjects += rollout_subjects(self.paths, now)
        return subjects


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0 or not math.isfinite(value):
        return None
    return value / base


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
