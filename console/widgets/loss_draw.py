"""Plots the Loss pane's view with plotext: faint raw points under the trend line, eval loss,
the baseline run, a second signal on the right y axis, and marks for the best eval point and
the newest checkpoint. Axis labels and ticks in words and units (see loss_plot)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from textual_plotext import PlotextPlot

from console.data import signal_info
from console.widgets.loss_plot import (AXIS_LABELS, Trace, best_eval, even_ticks,
                                       newest_checkpoint, trace, x_ticks)

if TYPE_CHECKING:
    from console.widgets.loss_pane import LossPane

Points = tuple[list[float], list[float]]


def draw(pane: LossPane, plot_widget: PlotextPlot, main: Trace) -> None:
    view, series, baseline = pane.view, pane.series, pane.overlay
    plt = plot_widget.plt
    plt.clear_data()
    plt.clear_figure()
    plt.yscale("log" if view.log_scale else "linear")
    points = pane.point_budget()
    left: list[Points] = []
    if baseline is not None:
        other = trace(baseline, view.signal, view.smoothing, view.axis)
        if other.xs:
            left.append(line(pane, plt, other, "baseline", points, faint_raw=False))
    left.append(line(pane, plt, main, "main", points))
    if view.signal == "loss" and series.eval_loss:
        evals = trace(series, "eval_loss", "off", view.axis)
        # each eval marked while they stand apart; a dense row of marks would hide the curve
        sparse = len(evals.xs) * 4 <= pane.size.width
        if evals.xs:
            left.append(line(pane, plt, evals, "eval", points, marker="●" if sparse else None))
    left += marks(pane, plt, view.signal, view.axis)
    right: list[Points] = []
    if view.second:
        second = trace(series, view.second, view.smoothing, view.axis)
        if second.xs:
            right.append(line(pane, plt, second, "second", points, yside="right"))
    frame(pane, plot_widget, left, right)


def line(pane: LossPane, plt, made: Trace, role: str, points: int, faint_raw: bool = True,
         marker: str | None = None, yside: str = "left") -> Points:
    """The trend over faint raw points (or the raw line when not smoothed); returns what it drew."""
    drawn: list[Points] = []
    log = pane.view.log_scale
    if made.trend is not None and faint_raw:
        xs, ys = positive(pane.drawn_points(made, made.raw, True, points), log)
        plt.scatter(xs, ys, marker="braille", color=pane.colour(role, faint=True), yside=yside)
        drawn.append((xs, ys))
    xs, ys = positive(pane.drawn_points(made, made.drawn, False, points), log)
    if len(xs) > 1:
        plt.plot(xs, ys, color=pane.colour(role), yside=yside)
    if len(xs) == 1 or marker:  # over the line: a reading, not a speck
        plt.scatter(xs, ys, marker=marker or "●", color=pane.colour(role), yside=yside)
    drawn.append((xs, ys))
    return [x for xs, _ in drawn for x in xs], [y for _, ys in drawn for y in ys]


def positive(points: Points, log: bool) -> Points:
    """On a log axis, values at or below zero (a learning rate's warm-up from 0) are left out."""
    if not log:
        return points
    kept = [(x, y) for x, y in zip(*points) if y > 0]
    return [x for x, _ in kept], [y for _, y in kept]


def marks(pane: LossPane, plt, signal: str, axis: str) -> list[Points]:
    """The best eval point (a diamond) and the newest checkpoint (a vertical line)."""
    drawn: list[Points] = []
    best = best_eval(pane.series, axis) if signal in ("loss", "eval_loss") else None
    if best is not None:
        plt.scatter([best[0]], [best[1]], marker="◆", color=pane.colour("eval"))
        drawn.append(([best[0]], [best[1]]))
    checkpoint = newest_checkpoint(pane.series, axis)
    if checkpoint is not None:
        plt.vline(checkpoint[0], color=pane.colour("checkpoint"))
        drawn.append(([checkpoint[0]], []))
    return drawn


def frame(pane: LossPane, plot_widget: PlotextPlot, left: list[Points],
          right: list[Points]) -> None:
    """Limits, ticks and labels: whole steps (or tokens, or wall time) on x, even values in the
    signal's unit on y, one tick a row at most."""
    plt, view = plot_widget.plt, pane.view
    all_x = [x for xs, _ in left + right for x in xs]
    low_x, high_x = min(all_x), max(all_x)
    if high_x - low_x < 2:  # one step (or two): a window around it
        low_x, high_x = max(0.0, low_x - 1), high_x + 1
        plt.xlim(low_x, high_x)
    plt.xticks(*x_ticks(view.axis, low_x, high_x, max(2, pane.size.width // 12)))
    rows = plot_widget.size.height - 4  # less the frame, the x ticks and the labels
    y_axis(plt, [y for _, ys in left for y in ys], rows, "left", view.log_scale)
    if right:
        y_axis(plt, [y for _, ys in right for y in ys], rows, "right", view.log_scale)
        plt.ylabel(signal_info(view.second or "").unit, "right")  # y side (the stub names it xside)
    plt.xlabel(AXIS_LABELS[view.axis])
    plt.ylabel(signal_info(view.signal).unit)
    plot_widget.refresh()


def y_axis(plt, values: list[float], rows: int, side: str, log_scale: bool) -> None:
    finite = [value for value in values if math.isfinite(value)]
    if log_scale or not finite:
        return
    low_y, high_y = min(finite), max(finite)
    if high_y - low_y < 1e-12 * max(1.0, abs(high_y)):  # flat (or one point): a band around it
        pad = max(abs(high_y) * 0.1, 0.05)
        low_y, high_y = low_y - pad, high_y + pad
        plt.ylim(low_y, high_y, yside=side)
    if rows >= 3:
        plt.yticks(*even_ticks(low_y, high_y, rows), yside=side)  # spacing >= a row: one a row
    else:  # one row or two: one tick, the middle of what is drawn
        middle = (low_y + high_y) / 2
        plt.yticks([middle], [f"{middle:.3g}"], yside=side)
