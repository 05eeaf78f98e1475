"""engine.training.series: the smoothing and run alignment the Loss pane and `jobs metrics` use."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.training import series

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
values_lists = st.lists(finite, min_size=1, max_size=60)
spans = st.floats(min_value=1.0, max_value=500.0)
BOUNDED = settings(max_examples=60, deadline=None)


@BOUNDED
@given(values_lists, spans)
def test_ema_stays_within_what_it_has_seen(values, span):
    smoothed = series.ema(values, span)
    assert len(smoothed) == len(values)
    assert smoothed[0] == pytest.approx(values[0])  # debiased: starts at the first point
    for index, value in enumerate(smoothed):
        seen = values[:index + 1]
        assert min(seen) - 1e-6 <= value <= max(seen) + 1e-6


@BOUNDED
@given(st.floats(min_value=-100, max_value=100, allow_nan=False), st.integers(1, 50), spans)
def test_ema_of_a_constant_is_the_constant(constant, count, span):
    assert series.ema([constant] * count, span) == pytest.approx([constant] * count)


@BOUNDED
@given(values_lists)
def test_span_one_is_the_raw_series(values):
    assert series.ema(values, 1) == values


def test_ema_matches_the_textbook_weights():
    # span 3: weight 0.5 per new point; debiased: (0.5*1 + 2) / 1.5 at the second point
    assert series.ema([1.0, 2.0, 4.0], 3) == pytest.approx([1.0, 2.5 / 1.5, (1 * 0.25 + 2 * 0.5 + 4) / 1.75])


def test_a_nan_passes_through_without_breaking_the_trend():
    smoothed = series.ema([1.0, float("nan"), 1.0], 5)
    assert smoothed[0] == 1.0 and math.isnan(smoothed[1]) and smoothed[2] == pytest.approx(1.0)


@BOUNDED
@given(values_lists, st.floats(min_value=0.05, max_value=0.95), st.floats(0.1, 100.0))
def test_time_weighted_ema_on_regular_steps_is_the_plain_ema(values, decay, gap):
    # A point's weight decays by `decay` per gap: the plain EMA whose new-point weight is 1-decay.
    span = 2.0 / (1.0 - decay) - 1.0
    times = [index * gap for index in range(len(values))]
    time_constant = -gap / math.log(decay)
    assert series.time_weighted_ema(times, values, time_constant) == pytest.approx(
        series.ema(values, span), rel=1e-6, abs=1e-6)


def test_time_weighted_ema_forgets_across_a_long_pause():
    # Three points at 0..2 s, then one after a pause of an hour: the trend follows the new
    # point almost fully, where a count-based EMA would still weigh the old three.
    times, values = [0.0, 1.0, 2.0, 3602.0], [5.0, 5.0, 5.0, 1.0]
    assert series.time_weighted_ema(times, values, 10.0)[-1] == pytest.approx(1.0, abs=1e-6)
    assert series.ema(values, 7)[-1] > 2.0


def noisy_loss(count: int, noise: float, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [2.0 / math.sqrt(step) + 0.8 + rng.gauss(0, noise) for step in range(1, count + 1)]


def test_adaptive_span_smooths_noise_and_leaves_a_smooth_curve():
    smooth, noisy = noisy_loss(1000, 0.0), noisy_loss(1000, 0.2)
    assert series.adaptive_span(smooth) <= 2
    assert series.adaptive_span(noisy) > 10 * series.adaptive_span(smooth)
    # the smoothed curve is closer to the truth than the raw points are
    truth = noisy_loss(1000, 0.0)
    smoothed, _ = series.adaptive_ema(noisy)
    raw_error = sum(abs(a - b) for a, b in zip(noisy[100:], truth[100:]))
    assert sum(abs(a - b) for a, b in zip(smoothed[100:], truth[100:])) < raw_error / 2


@BOUNDED
@given(st.lists(finite, min_size=0, max_size=80))
def test_adaptive_span_is_bounded(values):
    span = series.adaptive_span(values)
    assert 1 <= span <= max(1, len(values)) and span <= series.MAX_ADAPTIVE_SPAN
    assert 0.0 <= series.noise_level(values) <= 1.0


def test_adaptive_span_grows_with_the_run():
    assert series.adaptive_span(noisy_loss(200, 0.2)) < series.adaptive_span(noisy_loss(5000, 0.2))
    assert series.adaptive_span(noisy_loss(200_000, 0.2)) == series.MAX_ADAPTIVE_SPAN


def test_adaptive_time_constant_is_the_span_in_typical_gaps():
    values = noisy_loss(500, 0.2)
    times = [index * 2.0 for index in range(500)]
    times[300:] = [t + 600.0 for t in times[300:]]  # one long pause does not count
    constant = series.adaptive_time_constant(times, values)
    assert constant == pytest.approx((series.adaptive_span(values) - 1) / 2 * 2.0)


# ---- alignment ---------------------------------------------------------------------------------


def clock(steps, tokens_per_step=512.0, seconds_per_step=2.0, start=1000.0):
    return series.RunClock(tuple(float(s) for s in steps),
                           tuple(s * tokens_per_step for s in steps),
                           tuple(start + s * seconds_per_step for s in steps))


def test_interpolate_hits_known_points_and_refuses_outside():
    assert series.interpolate([0.0, 10.0], [1.0, 3.0], [-1.0, 0.0, 5.0, 10.0, 11.0]) == \
        [None, 1.0, 2.0, 3.0, None]


@BOUNDED
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=40, unique=True),
       st.sampled_from(series.AXES))
def test_a_run_aligned_with_itself_is_itself(steps, axis):
    steps = sorted(steps)
    run_clock = clock(steps)
    values = [float(s % 7) for s in steps]
    (xa, ya), (xb, yb) = series.align_runs((run_clock, steps, values), (run_clock, steps, values), axis)
    assert xa == xb and ya == yb == values
    assert xa == sorted(xa)  # x grows with the step on every axis


def test_two_runs_line_up_by_tokens_and_by_time():
    # The baseline runs half the batch (256 tokens a step) at 1 s a step: its step 200 saw as
    # many tokens as the current run's step 100, and came at the same second.
    current, baseline = clock(range(0, 101, 10)), clock(range(0, 201, 10), 256.0, 1.0, 5000.0)
    (xc, _), (xb, _) = series.align_runs((current, [100], [1.0]), (baseline, [200], [1.0]), "tokens")
    assert xc == xb == [51_200.0]
    (xc, _), (xb, _) = series.align_runs((current, [100], [1.0]), (baseline, [200], [1.0]), "time")
    assert xc == xb == [200.0]
    (xc, _), (xb, _) = series.align_runs((current, [100], [1.0]), (baseline, [200], [1.0]), "step")
    assert (xc, xb) == ([100.0], [200.0])


def test_an_eval_step_between_logged_steps_is_placed_by_interpolation():
    run_clock = clock([0, 10, 20])
    assert series.x_values(run_clock, [15], "tokens") == [7680.0]
    assert series.x_values(run_clock, [15], "time") == [30.0]
    assert series.x_values(run_clock, [25], "tokens") == [None]  # beyond what it reported


def test_a_run_without_token_counts_has_no_tokens_axis():
    run_clock = series.RunClock((1.0, 2.0), (None, None), (10.0, 11.0))
    assert series.aligned(run_clock, [1, 2], [3.0, 2.0], "tokens") == ([], [])


def test_resample_puts_the_baseline_on_the_current_x():
    assert series.resample([0.0, 10.0], [2.0, 1.0], [5.0, 20.0]) == [1.5, None]


def test_axes_cycle_and_unknown_axes_are_refused():
    assert [series.next_axis(a) for a in series.AXES] == ["tokens", "time", "step"]
    with pytest.raises(ValueError, match="unknown axis"):
        series.x_values(series.RunClock(), [1], "epochs")


def test_series_imports_no_torch():
    import json
    import subprocess
    import sys

    probe = ("import sys, json, engine.training.series\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                               timeout=60, check=True)
    loaded = set(json.loads(completed.stdout))
    assert not loaded & {"torch", "transformers", "numpy", "textual"}


@BOUNDED
@given(values_lists, spans, st.integers(0, 60))
def test_ema_continued_from_a_state_is_the_ema_of_the_whole(values, span, split):
    split = min(split, len(values))
    head, state = series.ema_from(values[:split], span)
    tail, _ = series.ema_from(values[split:], span, state)
    assert head + tail == pytest.approx(series.ema(values, span), rel=1e-9, abs=1e-9)
