"""Loss: train and eval loss of the selected job, following it live, with a log-scale toggle.

A long run is downsampled for drawing (per bucket the mean, with the bucket's min and max kept
as the envelope), never truncated: the first and the last step are always on screen."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from console import present
from console.data import LossSeries

MAX_DRAWN_POINTS = 400
MARKERS_PER_CELL = 2  # plotext's default marker draws two points per character cell
# A growing series is replotted at most this often (a new job, a toggle or new eval points
# replot at once): plotting is the dearest part of a refresh.
GROWTH_REPLOT_S = 3.0


def downsample(steps: Sequence[float], values: Sequence[float],
               max_points: int = MAX_DRAWN_POINTS) -> tuple[list[float], list[float]]:
    """At most max_points (step, mean) pairs covering the whole series, in order."""
    count = len(values)
    if count <= max_points:
        return list(steps), list(values)
    drawn_steps: list[float] = []
    drawn_values: list[float] = []
    for bucket in range(max_points):
        start = bucket * count // max_points
        end = max(start + 1, (bucket + 1) * count // max_points)
        chunk = values[start:end]
        drawn_steps.append(steps[end - 1])
        drawn_values.append(sum(chunk) / len(chunk))
    drawn_steps[0], drawn_values[0] = steps[0], values[0]
    drawn_steps[-1], drawn_values[-1] = steps[-1], values[-1]
    return drawn_steps, drawn_values


class LossPane(Vertical):
    can_focus = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.series = LossSeries(None, status="no-job", reason="no job yet")
        self.log_scale = False
        self._drawn_signature: tuple | None = None
        self._drawn_at = 0.0
        self._redraw_pending = False
        self.border_title = "Loss"

    def compose(self) -> ComposeResult:
        yield PlotextPlot()
        yield Static("", classes="pane-message")

    def show(self, series: LossSeries) -> None:
        self.series = series
        self.redraw()

    def toggle_log_scale(self) -> bool:
        self.log_scale = not self.log_scale
        self.redraw()
        return self.log_scale

    def signature(self) -> tuple:
        series = self.series
        return (series.job_id, series.status, len(series.eval_loss), self.log_scale,
                bool(series.train_loss))

    def redraw(self) -> None:
        signature = (self.signature(), len(self.series.train_loss))
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
        has_points = bool(series.train_loss or series.eval_loss)
        plot_widget.display = has_points
        message.display = not has_points
        scale = "log" if self.log_scale else "linear"
        job = present.short_job_id(series.job_id) if series.job_id else ""
        self.border_title = f"Loss {job} ({scale})".replace("  ", " ")
        if not has_points:
            message.update(self.empty_text(series))
            return
        self.plot(plot_widget, series)

    def _delayed_redraw(self) -> None:
        self._redraw_pending = False
        self.redraw()

    def plot(self, plot_widget: PlotextPlot, series: LossSeries) -> None:
        plt = plot_widget.plt
        plt.clear_data()
        plt.clear_figure()
        plt.yscale("log" if self.log_scale else "linear")
        tall = self.size.height >= 12  # a short pane keeps its rows for the curves
        # More points than the plot can show only cost time: one per drawable column.
        points = max(50, min(MAX_DRAWN_POINTS, self.size.width * MARKERS_PER_CELL))
        if series.train_loss:
            plt.plot(*downsample(series.train_steps, series.train_loss, points),
                     label="train" if tall else None)
        if series.eval_loss:
            plt.plot(*downsample(series.eval_steps, series.eval_loss, points),
                     label="eval" if tall else None)
        if tall:
            plt.xlabel("step")
        plot_widget.refresh()

    @staticmethod
    def empty_text(series: LossSeries) -> str:
        if series.status == "no-job":
            return "no jobs yet: f fine-tunes the selected version, and its loss shows here"
        if series.status == "not-available":
            return f"not available: {series.reason}"
        return f"job {series.job_id}: no loss reported yet"
