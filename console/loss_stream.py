"""A job's training signals, read from its events.jsonl as it grows: every numeric field of its
progress and eval events by step, its clock (tokens seen, wall time) and its checkpoints, built
into the LossSeries the Loss pane draws. Used by console.adapters' JobReader (one reader per
job, read on from its offset) and by the tests over recorded runs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from console.data import Curve, LossSeries
from engine.training.series import RunClock

# Fields of progress and eval events that are bookkeeping, not a signal to plot.
NOT_SIGNALS = {"t", "type", "step", "max_steps", "epoch", "tokens_seen", "elapsed_s", "cpu_s",
               "eta_s", "resumed_from_step", "world_size", "phase", "attempt", "rank"}
CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class Column:
    """One signal by step, kept as ready tuples: extended while steps arrive in order (a long
    run is not sorted again on every read), sorted once when a resumed attempt repeats steps."""

    by_step: dict[int, Any] = field(default_factory=dict)
    steps: tuple[float, ...] = ()
    values: tuple[Any, ...] = ()
    pending: list[tuple[int, Any]] = field(default_factory=list)
    resort: bool = False

    def set(self, step: int, value: Any) -> None:
        last = self.pending[-1][0] if self.pending else (self.steps[-1] if self.steps else None)
        if last is not None and step <= last:
            self.resort = True  # a repeated (resumed) or late step: its value overrides
        elif not self.resort:
            self.pending.append((step, value))
        self.by_step[step] = value

    def columns(self) -> tuple[tuple[float, ...], tuple[Any, ...]]:
        if self.resort:
            pairs = sorted(self.by_step.items())
            self.steps = tuple(float(step) for step, _ in pairs)
            self.values = tuple(value for _, value in pairs)
            self.pending.clear()
            self.resort = False
        elif self.pending:
            self.steps += tuple(float(step) for step, _ in self.pending)
            self.values += tuple(value for _, value in self.pending)
            self.pending.clear()
        return self.steps, self.values


@dataclass
class LossStream:
    """Every numeric signal of one job's progress and eval events, by step (a resumed attempt
    overrides the steps it repeats), its clock (tokens seen and time at each step) and its
    checkpoints. Fed event by event as the file grows; `series` builds what the pane draws."""

    signals: dict[str, Column] = field(default_factory=dict)
    tokens: Column = field(default_factory=Column)
    times: Column = field(default_factory=Column)
    checkpoints: set[int] = field(default_factory=set)
    last_progress: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        kind, step = event.get("type"), _number(event.get("step"))
        if step is None:
            return
        if kind == "checkpoint":
            self.checkpoints.add(int(step))
        if kind not in ("progress", "eval"):
            return
        for key, raw in event.items():
            value = _number(raw)
            if key in NOT_SIGNALS or value is None:
                continue
            name = key if kind == "progress" or key.startswith("eval_") else f"eval_{key}"
            self.signals.setdefault(name, Column()).set(int(step), value)
        if kind == "progress":
            self.last_progress = event
            tokens, at = _number(event.get("tokens_seen")), _number(event.get("t"))
            if at is not None:
                self.tokens.set(int(step), tokens if tokens and tokens > 0 else None)
                self.times.set(int(step), at)

    def series(self, job_id: str, checkpoint_dir: Path | None = None) -> LossSeries:
        def curve(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
            column = self.signals.get(name)
            return column.columns() if column is not None else ((), ())

        train_steps, train_loss = curve("loss")
        eval_steps, eval_loss = curve("eval_loss")
        others = tuple(Curve(name, *curve(name)) for name in sorted(self.signals)
                       if name not in ("loss", "eval_loss"))
        steps, tokens = self.tokens.columns()
        clock = RunClock(steps, tokens, self.times.columns()[1])
        progress = self.last_progress or {}
        eta, max_steps = _number(progress.get("eta_s")), _number(progress.get("max_steps"))
        saved = self.checkpoints | saved_checkpoints(checkpoint_dir)
        return LossSeries(job_id, train_steps, train_loss, eval_steps, eval_loss,
                          max_steps=int(max_steps) if max_steps else None,
                          eta_s=eta if eta and eta > 0 else None, signals=others, clock=clock,
                          checkpoints=tuple(float(step) for step in sorted(saved)))


def saved_checkpoints(directory: Path | None) -> set[int]:
    """Steps of the Trainer's checkpoint-N folders (jobs from before checkpoint events)."""
    try:
        names = [entry.name for entry in directory.iterdir()] if directory is not None else []
    except OSError:
        return set()
    return {int(found.group(1)) for found in map(CHECKPOINT_DIR.match, names) if found}
