"""The Loss pane's drawing data without a screen: traces (and their growth), downsampling,
ticks for each x axis, and the legend and title fitting the pane."""

from __future__ import annotations

from dataclasses import replace

import pytest

from console import replay
from console.widgets import loss_plot
from console.widgets.loss_pane import LossView, legend_of, title_of
from tests.console import loss_runs


def grown_by(series, count: int):
    return replace(series, train_steps=series.train_steps[:count], train_loss=series.train_loss[:count])


def test_a_growing_run_extends_its_trend_to_what_a_fresh_one_gives():
    full = replay.loss(60_000)  # long enough for the adaptive span to stay (at its cap)
    first = loss_plot.trace(grown_by(full, 50_000), "loss", "ema", "step")
    assert first.span == loss_plot.curves.MAX_ADAPTIVE_SPAN
    assert loss_plot.grown(first, grown_by(full, 50_100), "loss") is not None
    grown = loss_plot.trace(grown_by(full, 50_100), "loss", "ema", "step")
    fresh = loss_plot.make_trace(grown_by(full, 50_100), "loss", "ema", "step")
    assert grown.state is not None and grown.trend == pytest.approx(fresh.trend, rel=1e-12)
    assert grown.xs == fresh.xs and grown.span == fresh.span


def test_a_rewritten_run_is_smoothed_afresh():
    full = replay.loss(60_000)
    first = loss_plot.trace(grown_by(full, 50_000), "loss", "ema", "step")
    rewritten = list(full.train_loss[:50_100])
    rewritten[49_999] += 1.0  # a resumed attempt logged step 50,000 again, differently
    changed = replace(full, train_steps=full.train_steps[:50_100], train_loss=tuple(rewritten))
    assert loss_plot.grown(first, changed, "loss") is None
    assert loss_plot.trace(changed, "loss", "ema", "step").trend == pytest.approx(
        loss_plot.make_trace(changed, "loss", "ema", "step").trend)


def test_envelope_keeps_the_noise_band_of_a_long_run():
    steps = [float(step) for step in range(10_000)]
    values = [(-1.0) ** step for step in range(10_000)]  # +1, -1, +1, ...
    xs, ys = loss_plot.envelope(steps, values, 200)
    assert len(xs) == 200 and min(ys) == -1.0 and max(ys) == 1.0
    drawn_x, drawn_y = loss_plot.downsample(steps, values, 200)
    assert (drawn_x[0], drawn_x[-1]) == (0.0, 9999.0) and len(drawn_y) == 200


def test_x_ticks_read_as_steps_tokens_and_wall_time():
    assert loss_plot.x_ticks("step", 0, 1000, 5)[1] == ["0", "200", "400", "600", "800", "1000"]
    assert loss_plot.x_ticks("tokens", 0, 1_000_000, 4)[1] == ["0", "500k", "1M"]
    assert loss_plot.x_ticks("time", 0, 3600, 4)[1] == ["0s", "15m", "30m", "45m", "1h"]
    assert loss_plot.x_ticks("time", 0, 40, 4)[1] == ["0s", "10s", "20s", "30s", "40s"]


def test_small_values_get_digits_enough_to_tell_ticks_apart():
    labels = loss_plot.even_ticks(4e-5, 2e-4, 9)[1]
    assert labels[0] == "4.0e-05" and labels[-1] == "2.0e-04" and len(set(labels)) == len(labels)


@pytest.mark.parametrize("width", [20, 36, 60, 120])
def test_legend_and_title_fit_the_pane_and_keep_what_matters(width):
    series = loss_runs.recorded(loss_runs.CURRENT)
    baseline = loss_runs.recorded(loss_runs.BASELINE)
    view = LossView(second="learning_rate")
    legend = legend_of(series, view, width, baseline)
    plain = legend
    for colour in ("primary", "deck-good", "accent", "deck-warn", "deck-muted"):
        plain = plain.replace(f"[${colour}]", "")
    plain = plain.replace("[/]", "")
    assert len(plain) <= width and plain.startswith("━ train loss")
    if width >= 60:
        assert "baseline 9d7e31" in plain and "learning rate (right)" in plain
    title = title_of(series, view, width, baseline, 12)
    assert len(title) <= width and title.startswith("Loss + LR")
