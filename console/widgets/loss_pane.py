"""Loss: train and eval loss of the selected job, following it live, with a log-scale toggle.

A chart a person can read: the title says the job, its current step of all, the last loss and
the ETA; the axes are labelled (step, loss), a legend names train and eval, x ticks are whole
steps and y ticks even values (1, 2 or 5 times a power of ten). A job with a single point draws
it as a marked point in a window around it, not a lone dot at the plot's corner.

A long run is downsampled for drawing (per bucket the mean, with the bucket's min and max kept
as the envelope), never truncated: the first and the last step are always on screen."""

from __future__ import annotations

import math
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


def title_of(series: LossSeries, log_scale: bool, width: int = 200) -> str:
    """`Loss 2f182e · step 480/600 · loss 0.912 · ETA 2m05s (log)`; in a narrow pane the job
    id goes first, then the ETA (the Jobs pane shows both), so step and loss stay."""
    job = f" {present.short_job_id(series.job_id)}" if series.job_id else ""
    facts = []
    if series.train_steps:
        step = int(series.train_steps[-1])
        facts.append(f"step {step}/{series.max_steps}" if series.max_steps else f"step {step}")
        facts.append(f"loss {series.train_loss[-1]:.3f}")
    elif series.eval_loss:
        facts.append(f"eval loss {series.eval_loss[-1]:.3f}")
    eta = [f"ETA {present.duration(series.eta_s)}"] if series.eta_s else []
    scale = " (log)" if log_scale else ""
    for name, shown in ((f"Loss{job}", facts + eta), ("Loss", facts + eta), ("Loss", facts)):
        title = " · ".join([name, *shown]) + scale
        if len(title) <= width:
            break
    return title


def whole_ticks(low: float, high: float, most: int) -> tuple[list[float], list[str]]:
    """Whole-number steps on x: 1, 2 or 5 times a power of ten apart, at most `most` of them."""
    spacing = nice_spacing(max(1.0, (high - low) / max(1, most)), whole=True)
    first = math.ceil(low / spacing) * spacing
    ticks = [first + index * spacing for index in range(int((high - first) // spacing) + 1)]
    return ticks, [str(int(tick)) for tick in ticks]


def even_ticks(low: float, high: float, most: int) -> tuple[list[float], list[str]]:
    """Even loss values on y (0.2, 0.4, ... or 0.5, 1.0, ...), printed with as many decimals
    as the spacing needs."""
    spacing = nice_spacing((high - low) / max(1, most), whole=False)
    first = math.ceil(low / spacing - 1e-9) * spacing
    ticks = [first + index * spacing for index in range(int((high - first) / spacing + 1e-9) + 1)]
    decimals = max(0, -math.floor(math.log10(spacing))) if spacing < 1 else 0
    return ticks, [f"{tick:.{decimals}f}" for tick in ticks]


def nice_spacing(raw: float, whole: bool) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            spacing = factor * power
            return max(1.0, round(spacing)) if whole else spacing
    return 10 * power


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
        self.redraw()  # the title changes with the plot: a new title every tick repaints the pane

    def on_resize(self) -> None:
        """Title and ticks fit the pane's size: drawn again when it gets (or changes) its size."""
        if self._drawn_signature is not None:
            self._drawn_signature = None
            self.redraw()

    @property
    def title_room(self) -> int:
        return self.size.width - 4 if self.size.width else 200  # the border's corners and padding

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
        self.border_title = title_of(series, self.log_scale, self.title_room)
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
        # More points than the plot can show only cost time: one per drawable column.
        points = max(50, min(MAX_DRAWN_POINTS, self.size.width * MARKERS_PER_CELL))
        drawn: list[tuple[list[float], list[float]]] = []
        rows = plot_widget.size.height - 4  # less the frame, the x ticks and the labels
        legend = rows >= 3  # in a one-row plot the legend would cover the curve
        for steps, values, label in ((series.train_steps, series.train_loss, "train"),
                                     (series.eval_steps, series.eval_loss, "eval")):
            if not values:
                continue
            xs, ys = downsample(steps, values, points)
            drawn.append((xs, ys))
            if len(xs) == 1:  # one point: marked, so it reads as a reading, not a speck
                plt.scatter(xs, ys, label=label if legend else None, marker="●")
            else:
                plt.plot(xs, ys, label=label if legend else None)
        all_x = [x for xs, _ in drawn for x in xs]
        all_y = [y for _, ys in drawn for y in ys]
        low_x, high_x = min(all_x), max(all_x)
        if high_x - low_x < 2:  # one step (or two): a window around it, whole steps only
            low_x, high_x = max(0.0, low_x - 1), high_x + 1
            plt.xlim(low_x, high_x)
        plt.xticks(*whole_ticks(low_x, high_x, max(2, self.size.width // 12)))
        if not self.log_scale:
            low_y, high_y = min(all_y), max(all_y)
            if high_y - low_y < 1e-9:  # flat (or one point): a band around it
                pad = max(abs(high_y) * 0.1, 0.05)
                low_y, high_y = low_y - pad, high_y + pad
                plt.ylim(low_y, high_y)
            if rows >= 3:
                plt.yticks(*even_ticks(low_y, high_y, rows))  # spacing >= a row: one a row
            else:  # one row or two: one tick, the middle of what is drawn
                middle = (low_y + high_y) / 2
                plt.yticks([middle], [f"{middle:.3g}"])
        plt.xlabel("step")
        plt.ylabel("loss")
        plot_widget.refresh()

    @staticmethod
    def empty_text(series: LossSeries) -> str:
        if series.status == "no-job":
            return "no jobs yet: f fine-tunes the selected version, and its loss shows here"
        if series.status == "not-available":
            return f"not available: {series.reason}"
        return f"job {series.job_id}: no loss reported yet"
