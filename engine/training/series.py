"""Training curves as numbers: smoothing (EMA, an adaptive span, a time-weighted EMA) and the
alignment of two runs on one x axis (step, tokens seen or wall time).

Pure functions over sequences of floats: no torch, no numpy, so the console, the headless
`jobs metrics` command and the tests use them without loading the training stack.

Smoothing is debiased, as TensorBoard's and W&B's are: the first smoothed value is the first
raw value (a plain EMA started at 0 would drag the start of the curve towards 0). A value that
is not finite (a NaN loss) is passed through and does not disturb the trend around it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

AXES = ("step", "tokens", "time")  # what two runs can be aligned by
AXIS_WORDS = {"step": "step", "tokens": "tokens seen", "time": "wall time (s)"}
MAX_ADAPTIVE_SPAN = 2000  # beyond this the trend lags whole phases of a run
NOISE_SAMPLE = 4096  # the noise estimate reads at most this many points (from the newest end)


def ema(values: Sequence[float], span: float) -> list[float]:
    """Debiased exponential moving average; span 1 (or less) returns the values unchanged.

    The weight of each new point is 2 / (span + 1), pandas' `ewm(span=..., adjust=True)`."""
    return ema_from(values, span)[0]


EmaState = tuple[float, float]  # (weighted sum, sum of weights) after the last point
START: EmaState = (0.0, 0.0)


def ema_from(values: Sequence[float], span: float,
             state: EmaState = START) -> tuple[list[float], EmaState]:
    """The EMA of `values` continuing from `state` (what an earlier call returned for the points
    before them), and the state after them: a growing run is smoothed by its new points only."""
    if span <= 1:
        return [float(value) for value in values], state
    decay = 1.0 - 2.0 / (span + 1.0)
    weighted_sum, weight = state
    smoothed: list[float] = []
    append, isfinite = smoothed.append, math.isfinite  # the hot loop of a 100,000-point run
    for value in values:
        weighted_sum *= decay
        weight *= decay
        if not isfinite(value):
            append(float(value))  # shown as it is; the trend goes on from its neighbours
            continue
        weighted_sum += value
        weight += 1.0
        append(weighted_sum / weight)
    return smoothed, (weighted_sum, weight)


def time_weighted_ema(times: Sequence[float], values: Sequence[float],
                      time_constant: float) -> list[float]:
    """W&B's time-weighted EMA: a point's weight decays with the x distance (seconds, steps)
    to the newest one, exp(-distance / time_constant), not with the number of points between.
    Irregular logging (a pause, a resume, a burst of evals) neither over- nor under-smooths."""
    if len(times) != len(values):
        raise ValueError("times and values differ in length")
    if time_constant <= 0:
        return [float(value) for value in values]
    decays = [1.0] + [math.exp(-max(0.0, float(later) - float(earlier)) / time_constant)
                      for earlier, later in zip(times, times[1:])]
    return _decayed_average(values, decays)


def _decayed_average(values: Sequence[float], decays: Sequence[float]) -> list[float]:
    """sum(w_i * y_i) / sum(w_i), each older weight multiplied by decays[k] at point k."""
    weighted_sum = weight = 0.0
    smoothed: list[float] = []
    for value, decay in zip(values, decays):
        value = float(value)
        weighted_sum *= decay
        weight *= decay
        if not math.isfinite(value):
            smoothed.append(value)  # shown as it is; the trend goes on from its neighbours
            continue
        weighted_sum += value
        weight += 1.0
        smoothed.append(weighted_sum / weight)
    return smoothed


def noise_level(values: Sequence[float]) -> float:
    """How noisy the series is, 0 (a smooth curve) to 1 (the trend is lost in the noise): the
    typical step-to-step change against the spread of the series. Reads the newest half (at most
    NOISE_SAMPLE points): the steep first descent of a loss would make any noise look small."""
    newest = values[-min(NOISE_SAMPLE, max(3, len(values) // 2)):]
    recent = [float(v) for v in newest if math.isfinite(float(v))]
    if len(recent) < 3:
        return 0.0
    changes = sorted(abs(later - earlier) for earlier, later in zip(recent, recent[1:]))
    typical_change = changes[len(changes) // 2]
    ordered = sorted(recent)
    spread = ordered[len(ordered) * 9 // 10] - ordered[len(ordered) // 10]
    if typical_change <= 0:
        return 0.0
    # Pure white noise gives 0.27 here (median change 0.95 sigma, 10-90% spread 2.56 sigma):
    # call that fully noisy.
    return min(1.0, typical_change / (spread + typical_change) / 0.27)


def adaptive_span(values: Sequence[float]) -> int:
    """A span that smooths a noisy series more and a smooth one hardly at all, growing with the
    length of the run (a tenth of it, for pure noise), at least 1 and at most MAX_ADAPTIVE_SPAN."""
    count = len(values)
    if count < 3:
        return 1
    span = 1 + round(noise_level(values) * count / 10)
    return max(1, min(span, MAX_ADAPTIVE_SPAN, count))


def adaptive_ema(values: Sequence[float]) -> tuple[list[float], int]:
    """The EMA at the adaptive span, and the span (for the pane's title)."""
    span = adaptive_span(values)
    return ema(values, span), span


def adaptive_time_constant(times: Sequence[float], values: Sequence[float]) -> float:
    """The time-weighted EMA's time constant matching the adaptive span: the span's worth of the
    typical spacing between points (the median gap, so one long pause does not dominate)."""
    if len(times) < 2:
        return 0.0
    gaps = sorted(later - earlier for earlier, later in zip(times, times[1:]))
    typical_gap = gaps[len(gaps) // 2]
    if typical_gap <= 0:
        typical_gap = (times[-1] - times[0]) / (len(times) - 1) or 1.0
    return max(0.0, (adaptive_span(values) - 1) / 2) * typical_gap


# ---- alignment ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunClock:
    """What a run reported at each logged step: how many tokens it had seen and when (epoch
    seconds). Maps any step of the run (an eval step too) onto the other two axes."""

    steps: tuple[float, ...] = ()
    tokens: tuple[float | None, ...] = ()
    times: tuple[float, ...] = ()

    @property
    def started_at(self) -> float | None:
        return self.times[0] if self.times else None


def interpolate(known_x: Sequence[float], known_y: Sequence[float],
                at: Sequence[float]) -> list[float | None]:
    """Piecewise-linear y at each x in `at` (known_x ascending); None outside the known range."""
    result: list[float | None] = []
    if not known_x:
        return [None] * len(at)
    for x in at:
        index = bisect.bisect_left(known_x, x)
        if index < len(known_x) and known_x[index] == x:
            result.append(float(known_y[index]))
        elif index == 0 or index == len(known_x):
            result.append(None)
        else:
            x0, x1 = known_x[index - 1], known_x[index]
            y0, y1 = known_y[index - 1], known_y[index]
            result.append(float(y0 + (y1 - y0) * (x - x0) / (x1 - x0)))
    return result


def x_values(clock: RunClock, steps: Sequence[float], axis: str) -> list[float | None]:
    """The steps of one run as x values on `axis`: the step itself, the tokens seen at that step,
    or the seconds since the run's first logged point. None where the run did not say (no token
    count logged, or a step outside what its clock covers)."""
    if axis == "step":
        return [float(step) for step in steps]
    if axis == "tokens":
        pairs = [(s, t) for s, t in zip(clock.steps, clock.tokens) if t is not None]
        return interpolate([s for s, _ in pairs], [float(t) for _, t in pairs], steps)
    if axis == "time":
        start = clock.started_at
        if start is None:
            return [None] * len(steps)
        return [None if at is None else at - start
                for at in interpolate(clock.steps, clock.times, steps)]
    raise ValueError(f"unknown axis {axis!r}; one of {', '.join(AXES)}")


def aligned(clock: RunClock, steps: Sequence[float], values: Sequence[float],
            axis: str) -> tuple[list[float], list[float]]:
    """The (x, value) points of a run on `axis`, leaving out those it cannot place."""
    pairs = [(x, float(value)) for x, value in zip(x_values(clock, steps, axis), values)
             if x is not None]
    return [x for x, _ in pairs], [value for _, value in pairs]


def align_runs(current: tuple[RunClock, Sequence[float], Sequence[float]],
               baseline: tuple[RunClock, Sequence[float], Sequence[float]],
               axis: str) -> tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]]:
    """Both runs (clock, steps, values) on one x axis, each as (xs, values)."""
    return aligned(*current, axis), aligned(*baseline, axis)


def resample(xs: Sequence[float], values: Sequence[float],
             at: Sequence[float]) -> list[float | None]:
    """A run's values at another run's x positions (to compare the two point by point)."""
    return interpolate(xs, values, at)


def next_axis(axis: str) -> str:
    return AXES[(AXES.index(axis) + 1) % len(AXES)] if axis in AXES else AXES[0]
