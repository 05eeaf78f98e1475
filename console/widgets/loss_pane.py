"""Loss: every training signal of the selected job, following it live.

The title says what is shown (the signal, the smoothing, the job, its step of all, the newest
value, the ETA); the bottom border is the legend. Keys switch the signal (and a second one on
the right y axis), cycle the smoothing (an EMA trend line with an adaptive span over faint raw
points, the time-weighted EMA, or raw), pin another run as a baseline and cycle the x axis
(step, tokens seen, wall time). The best eval point and the newest checkpoint are marked.

A long run is downsampled for drawing, never truncated; smoothing and alignment are cached per
run and view, the drawn points per width, and nothing is replotted when nothing changed."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from console import present
from console.data import LossSeries, signal_info
from console.widgets.loss_draw import draw
from console.widgets.loss_plot import (AXIS_LABELS, MAX_DRAWN_POINTS, SMOOTHING,
                                       SMOOTHING_SHORT, SMOOTHING_WORDS, LossView, Trace,
                                       best_eval, downsample, envelope, even_ticks,
                                       newest_checkpoint, trace, whole_ticks, x_ticks)
from engine.training.series import next_axis

__all__ = ["LossPane", "LossRuns", "LossView", "downsample", "even_ticks", "title_of",
           "whole_ticks", "legend_of", "x_ticks"]

MARKERS_PER_CELL = 2  # plotext's default marker draws two points per character cell
# A growing series is replotted at most this often (a new job, a key or new eval points replot
# at once): plotting is the dearest part of a refresh.
GROWTH_REPLOT_S = 3.0
# Theme variables of each part of the plot; the raw points are the line's colour, faded.
COLOURS = {"main": "primary", "eval": "deck-good", "baseline": "accent", "second": "deck-warn",
           "checkpoint": "deck-muted"}
FAINT = 0.6  # how far the raw points fade into the background


@dataclass(frozen=True)
class LossRuns:
    """One read of the Loss pane's data: the job shown and the pinned baseline run, if any."""

    series: LossSeries
    baseline: LossSeries | None = None


def value_text(name: str, value: float) -> str:
    """The newest value in the title, in the signal's unit: `0.912`, `2.0e-04`, `3.41 GiB`."""
    info = signal_info(name)
    scaled = value * info.scale
    if info.unit == "GiB":
        return f"{scaled:.2f} GiB"
    if info.unit == "seconds":
        return f"{scaled:.2f} s"
    if name in ("loss", "eval_loss"):
        return f"{scaled:.3f}"
    if abs(scaled) < 1e-2 and scaled != 0:
        return f"{scaled:.1e}"
    return f"{scaled:.3g}" if abs(scaled) < 1000 else f"{scaled:.0f}"


def title_of(series: LossSeries, view: LossView = LossView(), width: int = 200,
             baseline: LossSeries | None = None, span: int | None = None) -> str:
    """`Loss 2f182e · EMA span 12 · step 480/600 · loss 0.912 · ETA 2m05s · vs 9d7e31`; in a
    narrow pane the job id, the ETA, the baseline and the words go first (the Jobs pane and
    the legend say them), so the signal, the smoothing, the step and the value stay."""
    name = signal_info(view.signal).short
    if view.second:
        name += f" + {signal_info(view.second).short}"
    job = f" {present.short_job_id(series.job_id)}" if series.job_id else ""
    smooth = SMOOTHING_WORDS[view.smoothing] + (f" span {span}" if span and view.smoothing == "ema" else "")
    curve = series.curve(view.signal)
    step = series.train_steps[-1] if series.train_steps else (curve.steps[-1] if curve.steps else None)
    step_text = "" if step is None else (
        f"step {int(step)}/{series.max_steps}" if series.max_steps else f"step {int(step)}")
    value = value_text(view.signal, curve.values[-1]) if curve.values else ""
    word = signal_info(view.signal).unit if view.signal in ("loss", "eval_loss") else ""
    eta = f"ETA {present.duration(series.eta_s)}" if series.eta_s else ""
    versus = f"vs {present.short_job_id(baseline.job_id)}" if baseline and baseline.job_id else ""
    axis = f"by {AXIS_LABELS[view.axis]}" if view.axis != "step" else ""
    scale = " (log)" if view.log_scale else ""
    long_value = f"{word} {value}".strip() if value else ""
    candidates = [
        (name + job, smooth, step_text, long_value, eta, versus, axis),
        (name, smooth, step_text, long_value, eta, versus, axis),
        (name, smooth, step_text, long_value, versus, axis),
        (name, smooth, step_text, long_value, axis),
        (name, SMOOTHING_SHORT[view.smoothing], step_text, long_value),
        (name, SMOOTHING_SHORT[view.smoothing], step_text, value),
        (name, SMOOTHING_SHORT[view.smoothing], value),
        (name, SMOOTHING_SHORT[view.smoothing]),
    ]
    for parts in candidates:
        title = " · ".join(part for part in parts if part) + scale
        if len(title) <= width:
            return title
    return title[:max(1, width)]


def legend_of(series: LossSeries, view: LossView, width: int = 200,
              baseline: LossSeries | None = None) -> str:
    """The bottom border: what each colour and mark means, in words (markup with theme colours).
    Items that do not fit are left out, the least needed first."""
    items: list[tuple[int, str, str]] = []  # (priority, plain text, markup)

    def add(priority: int, role: str, mark: str, words: str) -> None:
        colour = COLOURS.get(role, "foreground")
        items.append((priority, f"{mark} {words}", f"[${colour}]{mark}[/] {words}"))

    add(0, "main", "━", signal_info(view.signal).words)
    if view.smoothing != "off":
        add(6, "main", "·", "raw")
    if view.signal == "loss" and series.eval_loss:
        add(3, "eval", "●", "eval")
    best = best_eval(series, view.axis) if view.signal in ("loss", "eval_loss") else None
    if best is not None:
        add(2, "eval", "◆", f"best eval {best[1]:.3f} @{int(best[2])}")
    checkpoint = newest_checkpoint(series, view.axis)
    if checkpoint is not None:
        add(4, "checkpoint", "│", f"checkpoint @{int(checkpoint[1])}")
    if baseline is not None and baseline.job_id:
        add(1, "baseline", "━", f"baseline {present.short_job_id(baseline.job_id)}")
    if view.second:
        add(1, "second", "━", f"{signal_info(view.second).words} (right)")
    room = width
    kept = []
    for priority, plain, markup in sorted(items, key=lambda item: item[0]):
        if len(plain) + 2 <= room:
            kept.append((priority, plain, markup))
            room -= len(plain) + 2
    order = {markup: index for index, (_, _, markup) in enumerate(items)}
    return "  ".join(markup for _, _, markup in sorted(kept, key=lambda item: order[item[2]]))


class LossPane(Vertical):
    can_focus = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.series = LossSeries(None, status="no-job", reason="no job yet")
        self.baseline: LossSeries | None = None
        self.baseline_id: str | None = None
        self.view = LossView()
        self._drawn_signature: tuple | None = None
        self._drawn_at = 0.0
        self._redraw_pending = False
        self._points: dict[tuple, tuple[Trace, tuple[list[float], list[float]]]] = {}
        self.border_title = "Loss"

    def compose(self) -> ComposeResult:
        yield PlotextPlot()
        yield Static("", classes="pane-message")

    # ---- data ------------------------------------------------------------------------------------

    def show(self, value: LossSeries | LossRuns) -> None:
        runs = value if isinstance(value, LossRuns) else LossRuns(value, self.baseline)
        new_job = runs.series.job_id != self.series.job_id
        self.series = runs.series
        if runs.baseline is not None and runs.baseline.job_id == self.baseline_id:
            self.baseline = runs.baseline
        names = self.series.signal_names
        if new_job and names and self.view.signal not in names:  # another job logs other signals
            self.view = replace(self.view, signal="loss" if "loss" in names else names[0],
                                second=self.view.second if self.view.second in names else None)
        self.redraw()  # the title changes with the plot: a new title every tick repaints the pane

    def show_baseline(self, baseline: LossSeries | None) -> None:
        if baseline is None or baseline.job_id == self.baseline_id:
            self.baseline = baseline if baseline is None or baseline.status == "ok" else None
            self.redraw()

    @property
    def overlay(self) -> LossSeries | None:
        """The baseline to draw: not when the job shown is the pinned one itself."""
        baseline = self.baseline
        return baseline if baseline is not None and baseline.job_id != self.series.job_id else None

    def pin(self, job_id: str | None) -> None:
        """Compare with another job (None: stop comparing); its series arrives by show_baseline."""
        self.baseline_id = job_id
        if self.baseline is not None and self.baseline.job_id != job_id:
            self.baseline = None
        self.redraw()

    # ---- keys ------------------------------------------------------------------------------------

    def set_view(self, **changes: Any) -> LossView:
        self.view = replace(self.view, **changes)
        self.redraw()
        return self.view

    def toggle_log_scale(self) -> bool:
        return self.set_view(log_scale=not self.view.log_scale).log_scale

    @property
    def log_scale(self) -> bool:
        return self.view.log_scale

    def next_signal(self) -> str:
        names = self.series.signal_names or ("loss",)
        index = names.index(self.view.signal) + 1 if self.view.signal in names else 0
        return self.set_view(signal=names[index % len(names)]).signal

    def next_second(self) -> str | None:
        """Cycles the second signal through the others, then none."""
        names = [name for name in self.series.signal_names if name != self.view.signal]
        choices: list[str | None] = [*names, None]
        index = choices.index(self.view.second) + 1 if self.view.second in choices else 0
        return self.set_view(second=choices[index % len(choices)]).second

    def next_smoothing(self) -> str:
        index = SMOOTHING.index(self.view.smoothing) + 1
        return self.set_view(smoothing=SMOOTHING[index % len(SMOOTHING)]).smoothing

    def next_axis(self) -> str:
        return self.set_view(axis=next_axis(self.view.axis)).axis

    # ---- drawing ---------------------------------------------------------------------------------

    def on_resize(self) -> None:
        """Title and ticks fit the pane's size: drawn again when it gets (or changes) its size."""
        if self._drawn_signature is not None:
            self._drawn_signature = None
            self.redraw()

    @property
    def title_room(self) -> int:
        return self.size.width - 4 if self.size.width else 200  # the border's corners and padding

    def signature(self) -> tuple[tuple, tuple]:
        """(what a key or a new job changes: replot at once, how much data there is: replot
        at most every GROWTH_REPLOT_S)."""
        series, baseline = self.series, self.overlay
        shown = (self.view.signal, self.view.second)
        identity = (series.job_id, series.status, len(series.eval_loss), self.view,
                    bool(series.curve(self.view.signal).values), self.baseline_id,
                    baseline.job_id if baseline else None, self.app.theme)
        growth = (tuple(len(series.curve(name).values) for name in shown if name),
                  len(series.train_loss), len(series.checkpoints),
                  len(baseline.curve(self.view.signal).values) if baseline else 0)
        return identity, growth

    def redraw(self) -> None:
        if not self.is_mounted:
            return
        signature = self.signature()
        if signature == self._drawn_signature:
            return  # nothing new
        if (self._drawn_signature is not None and signature[0] == self._drawn_signature[0]
                and time.monotonic() - self._drawn_at < GROWTH_REPLOT_S):
            if not self._redraw_pending:  # only grown: draw it a bit later, with one timer
                self._redraw_pending = True
                self.set_timer(GROWTH_REPLOT_S, self._delayed_redraw)
            return
        self._drawn_signature, self._drawn_at = signature, time.monotonic()
        series = self.series
        plot_widget = self.query_one(PlotextPlot)
        message = self.query_one(".pane-message", Static)
        main = trace(series, self.view.signal, self.view.smoothing, self.view.axis)
        has_points = bool(main.xs)
        plot_widget.display = has_points
        message.display = not has_points
        if not has_points:
            self.border_title = title_of(series, self.view, self.title_room, self.overlay)
            self.border_subtitle = ""
            message.update(self.empty_text(series, self.view))
            return
        self.border_title = title_of(series, self.view, self.title_room, self.overlay, main.span)
        self.border_subtitle = legend_of(series, self.view, self.title_room, self.overlay)
        draw(self, plot_widget, main)

    def _delayed_redraw(self) -> None:
        self._redraw_pending = False
        self.redraw()

    def drawn_points(self, made: Trace, values: tuple[float, ...], faint: bool,
                     points: int) -> tuple[list[float], list[float]]:
        """Downsampled once per trace and width (a resize or a new trace draws them again)."""
        key = (id(made), id(values), faint, points)
        found = self._points.get(key)
        if found is not None and found[0] is made:
            return found[1]
        drawn = (envelope if faint else downsample)(made.xs, values, points)
        if len(self._points) > 32:
            self._points.clear()
        self._points[key] = (made, drawn)
        return drawn

    def colour(self, role: str, faint: bool = False) -> tuple[int, int, int]:
        variables = self.app.theme_variables
        colour = Color.parse(variables.get(COLOURS.get(role, role)) or variables["foreground"])
        if faint:
            colour = colour.blend(Color.parse(variables.get("surface", "#000000")), FAINT)
        return colour.rgb

    def point_budget(self) -> int:
        """More points than the plot can show only cost time: one per drawable column."""
        return max(50, min(MAX_DRAWN_POINTS, self.size.width * MARKERS_PER_CELL))

    @staticmethod
    def empty_text(series: LossSeries, view: LossView = LossView()) -> str:
        if series.status == "no-job":
            return "no jobs yet: f fine-tunes the selected version, and its loss shows here"
        if series.status == "not-available":
            return f"not available: {series.reason}"
        words = signal_info(view.signal).words
        if series.curve(view.signal).values:  # logged, but not placeable on this x axis
            return (f"job {series.job_id} did not log {AXIS_LABELS[view.axis]} for its "
                    f"{words}: w changes the x axis")
        if series.signal_names:
            return f"job {series.job_id}: no {words} logged yet (m shows the next signal)"
        return f"job {series.job_id}: no loss reported yet"

