"""What the Loss pane draws, as plain data: the view (which signals, smoothing, x axis), the
traces of each run on that x axis (raw points and the trend line, cached), downsampling for
drawing, and ticks a person can read. No widgets here, so all of it is tested directly.

Smoothing and alignment are engine.training.series (the same maths as `jobs metrics`)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from console.data import LossSeries, signal_info
from engine.training import series as curves

MAX_DRAWN_POINTS = 400
SMOOTHING = ("ema", "time", "off")  # the smoothing key cycles in this order
SMOOTHING_WORDS = {"off": "raw", "ema": "EMA", "time": "time-weighted EMA"}
SMOOTHING_SHORT = {"off": "raw", "ema": "EMA", "time": "TW EMA"}
AXIS_LABELS = {"step": "step", "tokens": "tokens seen", "time": "wall time"}
TRACE_CACHE_SIZE = 16


@dataclass(frozen=True)
class LossView:
    """What the pane shows; every key of the pane changes one field."""

    signal: str = "loss"
    second: str | None = None  # a second signal on the right y axis
    smoothing: str = "ema"
    axis: str = "step"
    log_scale: bool = False


@dataclass(frozen=True)
class Trace:
    """One signal of one run on the view's x axis: raw values and, when smoothed, the trend."""

    xs: tuple[float, ...]
    raw: tuple[float, ...]
    trend: tuple[float, ...] | None = None
    span: int | None = None  # the adaptive span the trend used
    state: curves.EmaState | None = None  # the EMA after the last point, to extend it

    @property
    def drawn(self) -> tuple[float, ...]:
        return self.trend if self.trend is not None else self.raw


_traces: OrderedDict[tuple, Trace] = OrderedDict()
_latest: dict[tuple, Trace] = {}  # per run, signal and view: the newest trace, to grow from


def trace(series: LossSeries, name: str, smoothing: str, axis: str) -> Trace:
    """Cached: a 100,000-point run is aligned and smoothed once per change, not once a frame,
    and a growing run's EMA is extended by its new points. The key is the run, the signal and
    how much of it there is."""
    curve = series.curve(name)
    # the values' identity too: a resumed attempt may rewrite steps and keep the length (the
    # reader builds new tuples only when something changed)
    key = (series.job_id, name, id(curve.values), len(curve.values), curve.values[-1:],
           smoothing, axis, len(series.clock.steps))
    found = _traces.get(key)
    if found is not None:
        _traces.move_to_end(key)
        return found
    view_key = (series.job_id, name, smoothing, axis)
    previous = _latest.get(view_key)
    made = (grown(previous, series, name) if previous is not None else None) or \
        make_trace(series, name, smoothing, axis)
    _traces[key] = _latest[view_key] = made
    while len(_traces) > TRACE_CACHE_SIZE:
        _traces.popitem(last=False)
    if len(_latest) > TRACE_CACHE_SIZE:
        _latest.clear()
        _latest[view_key] = made
    return made


def scaled(name: str, values: tuple[float, ...]) -> tuple[float, ...]:
    scale = signal_info(name).scale
    return tuple(value * scale for value in values) if scale != 1.0 else values


def grown(previous: Trace, series: LossSeries, name: str) -> Trace | None:
    """The previous EMA trace (step axis) extended by the points added since, when the run only
    grew and the adaptive span stayed; None when it must be made afresh."""
    curve = series.curve(name)
    known = len(previous.raw)
    if previous.state is None or previous.trend is None or not 0 < known < len(curve.values) \
            or curve.steps[known - 1] != previous.xs[-1]:
        return None
    raw = scaled(name, curve.values)
    if raw[known - 1] != previous.raw[-1] or curves.adaptive_span(raw) != previous.span:
        return None  # a resumed attempt rewrote steps, or the run is noisier now
    added, state = curves.ema_from(raw[known:], previous.span, previous.state)
    return Trace(curve.steps, raw, previous.trend + tuple(added), previous.span, state)


def make_trace(series: LossSeries, name: str, smoothing: str, axis: str) -> Trace:
    curve = series.curve(name)
    if axis == "step":
        steps, xs, values = curve.steps, curve.steps, curve.values
    else:
        placed = [(step, x, value) for step, x, value in zip(
            curve.steps, curves.x_values(series.clock, curve.steps, axis), curve.values)
            if x is not None]
        steps = tuple(step for step, _, _ in placed)
        xs, values = tuple(x for _, x, _ in placed), tuple(value for _, _, value in placed)
    raw = scaled(name, values)
    if smoothing == "off" or len(raw) < 3:
        return Trace(xs, raw)
    if smoothing == "ema":
        span = curves.adaptive_span(raw)
        trend, state = curves.ema_from(raw, span)
        return Trace(xs, raw, tuple(trend), span, state if axis == "step" else None)
    times = xs if axis == "time" else curves.x_values(series.clock, steps, "time")
    if any(at is None for at in times):
        times = list(steps)  # no wall clock logged: weigh by steps (a plain EMA on a regular run)
    constant = curves.adaptive_time_constant(times, raw)  # type: ignore[arg-type]
    trend = curves.time_weighted_ema(times, raw, constant)  # type: ignore[arg-type]
    return Trace(xs, raw, tuple(trend), curves.adaptive_span(raw))


def buckets(count: int, number: int) -> list[tuple[int, int]]:
    """`number` consecutive (start, end) slices covering `count` points, none empty."""
    return [(index * count // number, max(index * count // number + 1, (index + 1) * count // number))
            for index in range(number)]


def downsample(steps: Sequence[float], values: Sequence[float],
               max_points: int = MAX_DRAWN_POINTS) -> tuple[list[float], list[float]]:
    """At most max_points (x, mean) pairs covering the whole series, in order; the first and the
    last point are always kept."""
    count = len(values)
    if count <= max_points:
        return list(steps), list(values)
    slices = buckets(count, max_points)
    drawn_steps = [steps[end - 1] for _, end in slices]
    drawn_values = [sum(values[start:end]) / (end - start) for start, end in slices]
    drawn_steps[0], drawn_values[0] = steps[0], values[0]
    drawn_steps[-1], drawn_values[-1] = steps[-1], values[-1]
    return drawn_steps, drawn_values


def envelope(steps: Sequence[float], values: Sequence[float],
             max_points: int = MAX_DRAWN_POINTS) -> tuple[list[float], list[float]]:
    """The raw points to draw faintly: all of them when they fit, else each bucket's lowest and
    highest value, so the noise band keeps its true width however long the run."""
    count = len(values)
    if count <= max_points:
        return list(steps), list(values)
    xs: list[float] = []
    ys: list[float] = []
    for start, end in buckets(count, max(1, max_points // 2)):
        chunk = values[start:end]
        middle = steps[(start + end - 1) // 2]
        xs += [middle, middle]
        ys += [min(chunk), max(chunk)]
    return xs, ys


def best_eval(series: LossSeries, axis: str) -> tuple[float, float, float] | None:
    """(x, eval loss, step) of the lowest eval loss, placed on the axis; None without evals."""
    if not series.eval_loss:
        return None
    index = min(range(len(series.eval_loss)), key=series.eval_loss.__getitem__)
    step = series.eval_steps[index]
    x = curves.x_values(series.clock, [step], axis)[0]
    return None if x is None else (x, series.eval_loss[index], step)


def newest_checkpoint(series: LossSeries, axis: str) -> tuple[float, float] | None:
    """(x, step) of the newest checkpoint, placed on the axis."""
    if not series.checkpoints:
        return None
    step = series.checkpoints[-1]
    x = curves.x_values(series.clock, [step], axis)[0]
    return None if x is None else (x, step)


# ---- ticks -------------------------------------------------------------------------------------


def nice_spacing(raw: float, whole: bool) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            spacing = factor * power
            return max(1.0, round(spacing)) if whole else spacing
    return 10 * power


def whole_ticks(low: float, high: float, most: int) -> tuple[list[float], list[str]]:
    """Whole-number steps on x: 1, 2 or 5 times a power of ten apart, at most `most` of them."""
    spacing = nice_spacing(max(1.0, (high - low) / max(1, most)), whole=True)
    first = math.ceil(low / spacing) * spacing
    ticks = [first + index * spacing for index in range(int((high - first) // spacing) + 1)]
    return ticks, [str(int(tick)) for tick in ticks]


def even_ticks(low: float, high: float, most: int) -> tuple[list[float], list[str]]:
    """Even values on y (0.2, 0.4, ... or 0.5, 1.0, ...), printed with as many decimals as the
    spacing needs (very small ones, a learning rate, in powers of ten: 2e-04)."""
    spacing = nice_spacing((high - low) / max(1, most), whole=False)
    first = math.ceil(low / spacing - 1e-9) * spacing
    ticks = [first + index * spacing for index in range(int((high - first) / spacing + 1e-9) + 1)]
    if spacing < 1e-3:  # 1.8e-04, 2.0e-04: as many digits as tell neighbours apart
        top = max(abs(tick) for tick in ticks) if ticks else spacing
        digits = max(0, math.floor(math.log10(top)) - math.floor(math.log10(spacing)))
        return ticks, [f"{tick:.{digits}e}" if abs(tick) > spacing / 2 else "0" for tick in ticks]
    decimals = max(0, -math.floor(math.log10(spacing))) if spacing < 1 else 0
    return ticks, [f"{tick:.{decimals}f}" for tick in ticks]


def count_label(value: float) -> str:
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:g}{suffix}"
    return f"{value:g}"


TIME_SPACINGS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                 43200, 86400)


def time_label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def x_ticks(axis: str, low: float, high: float, most: int) -> tuple[list[float], list[str]]:
    """Steps as whole numbers, tokens as 200k / 1.5M, wall time as 30s / 10m / 1h30."""
    if axis == "step":
        return whole_ticks(low, high, most)
    if axis == "time":
        raw = (high - low) / max(1, most)
        spacing = float(next((s for s in TIME_SPACINGS if s >= raw), TIME_SPACINGS[-1]))
    else:
        spacing = nice_spacing(max(1.0, (high - low) / max(1, most)), whole=True)
    first = math.ceil(low / spacing) * spacing
    ticks = [first + index * spacing for index in range(int((high - first) // spacing) + 1)]
    label = time_label if axis == "time" else count_label
    return ticks, [label(tick) for tick in ticks]
