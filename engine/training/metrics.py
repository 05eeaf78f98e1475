"""Every training signal of a job, read back from its events.jsonl: the series behind
`modeldeck jobs metrics` and `jobs snapshot`. No torch: scripts read these cheaply."""

from __future__ import annotations

import math
from typing import Any

from engine.errors import BadInput

# metric -> (event type, field). The progress signals come from engine.training.callback.
METRICS: dict[str, tuple[str, str]] = {
    "loss": ("progress", "loss"), "eval_loss": ("eval", "eval_loss"),
    "eval_perplexity": ("eval", "perplexity"), "learning_rate": ("progress", "learning_rate"),
    "grad_norm": ("progress", "grad_norm"), "tokens_per_s": ("progress", "tokens_per_s"),
    "samples_per_s": ("progress", "samples_per_s"), "step_time_s": ("progress", "step_time_s"),
    "memory_bytes": ("progress", "memory_bytes"), "tokens_seen": ("progress", "tokens_seen"),
}
DEFAULT_SPAN = 10.0  # the EMA span of the smoothed values in the JSON


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise BadInput(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    return metric


def metric_series(events: list[dict[str, Any]], metric: str) -> list[tuple[int, float]]:
    """(step, value) of one metric, by step; a resumed attempt overrides the steps it repeats."""
    event_type, name = METRICS[check_metric(metric)]
    by_step: dict[int, float] = {}
    for event in events:
        value, step = event.get(name), event.get("step")
        if event.get("type") == event_type and _is_number(value) and _is_number(step):
            by_step[int(step)] = float(value)  # type: ignore[arg-type]  # a number, checked
    return sorted(by_step.items())


def metric_points(events: list[dict[str, Any]], metric: str, around: int | None = None,
                  window: int | None = None, span: float = DEFAULT_SPAN) -> dict[str, Any]:
    """One metric's points with their EMA-smoothed values, smoothed over the whole run and
    then cut to [around - window, around + window] (a window never changes a smoothed value)."""
    from engine.training.series import ema

    series = metric_series(events, metric)
    smoothed = ema([value for _, value in series], span)
    points: list[dict[str, Any]] = [{"step": step, "value": value, "smoothed": _finite_or_none(trend)}
              for (step, value), trend in zip(series, smoothed)]
    if around is not None:
        steps = all_steps(events)
        if not steps or not steps[0] <= around <= steps[-1]:
            raise BadInput(f"--around {around}: the job has no step there ({_range_text(steps)})")
        low, high = around - (window or 0), around + (window or 0)
        points = [p for p in points if low <= p["step"] <= high]
    return {"metric": metric, "smoothing": {"kind": "ema", "span": span}, "points": points}


def snapshot_at(events: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """Every metric logged at `step` (and the checkpoint saved there, if any)."""
    values = {metric: dict(metric_series(events, metric)).get(step) for metric in METRICS}
    present = {metric: value for metric, value in values.items() if value is not None}
    if not present:
        raise BadInput(f"--step {step}: nothing was logged at that step "
                       f"({_range_text(all_steps(events))})")
    checkpoint = next((e.get("path") for e in reversed(events)
                       if e.get("type") == "checkpoint" and e.get("step") == step), None)
    return {"step": step, "metrics": present, "checkpoint": checkpoint}


def all_steps(events: list[dict[str, Any]]) -> list[int]:
    return sorted({int(e["step"]) for e in events if e.get("type") in ("progress", "eval")
                   and _is_number(e.get("step"))})


def _range_text(steps: list[int]) -> str:
    return f"logged steps {steps[0]}-{steps[-1]}" if steps else "nothing logged yet"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
