"""Every key of the Loss pane over two recorded runs of one model (tests/console/fixtures/runs):
the signal switch (m) and the second signal (n), the smoothing cycle (e), pinning a baseline run
(b, a picker of the model family's running and finished jobs) and the x-axis cycle (w); and the
palette entries that do the same."""

from __future__ import annotations

import pytest

from console.app import ModeldeckApp
from console.palette import loss_entries
from console.screens.modals import ChoiceScreen
from console.sources import FixedSource
from console.widgets.loss_pane import LossPane
from console.widgets.loss_plot import trace
from engine.deck import Deck
from tests.console import loss_runs
from tests.console.console_helpers import screen_text, wait_until_loaded

pytestmark = pytest.mark.anyio


def pane_lines(app) -> list[str]:
    region = app.dashboard.query_one(LossPane).region
    lines = screen_text(app).splitlines()[region.y:region.bottom]
    return [line[region.x:region.right] for line in lines]


def recorded_app(deck_home) -> ModeldeckApp:
    return ModeldeckApp(Deck.at(deck_home), FixedSource(loss_runs.snapshot()), refresh_s=600.0)


async def press(pilot, key: str) -> LossPane:
    await pilot.press(key)
    await pilot.pause(0.05)
    return pilot.app.dashboard.query_one(LossPane)


async def test_every_logged_signal_is_shown_in_words_and_units(deck_home):
    app = recorded_app(deck_home)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        pane = app.dashboard.query_one(LossPane)
        assert pane.series.signal_names == (
            "loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "samples_per_s",
            "step_time_s", "memory_bytes", "eval_perplexity")
        seen = {}
        for _ in pane.series.signal_names:
            pane = await press(pilot, "m")
            seen[pane.view.signal] = pane_lines(app)
        assert pane.view.signal == "loss"  # the cycle comes back round
    assert seen["learning_rate"][0].startswith("╭─ LR 2f182e · EMA span")
    assert "learning rate" in seen["learning_rate"][-2]  # the y axis says its unit
    memory = seen["memory_bytes"]
    assert "GiB" in memory[0] and "GiB" in memory[-2], memory  # bytes shown in GiB
    assert "step time" in "\n".join(seen["step_time_s"]) and "seconds" in seen["step_time_s"][-2]
    assert "━ memory" in memory[-1]  # the legend names it in words
    for lines in seen.values():
        assert not any("_" in line or "'" in line for line in lines), lines  # no field names


async def test_second_signal_goes_on_the_right_axis_and_cycles_off(deck_home):
    app = recorded_app(deck_home)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        pane = await press(pilot, "n")
        assert pane.view.second == "eval_loss"
        pane = await press(pilot, "n")
        assert pane.view.second == "learning_rate"
        lines = pane_lines(app)
        assert lines[0].startswith("╭─ Loss + LR"), lines[0]
        assert "learning rate (right)" in lines[-1] and lines[-2].rstrip(" │").endswith("learning rate")
        for _ in range(len(pane.series.signal_names) - 2):
            pane = await press(pilot, "n")
        assert pane.view.second is None
        assert "(right)" not in pane_lines(app)[-1]


async def test_smoothing_cycles_ema_time_weighted_raw(deck_home):
    app = recorded_app(deck_home)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        pane = app.dashboard.query_one(LossPane)
        ema_lines = pane_lines(app)
        assert pane.view.smoothing == "ema" and "· EMA span" in ema_lines[0]
        smoothed = trace(pane.series, "loss", "ema", "step")
        # the recorded loss is noisy: the trend line is visibly off the raw points
        assert max(abs(a - b) for a, b in zip(smoothed.raw, smoothed.trend)) > 0.15
        pane = await press(pilot, "e")
        assert pane.view.smoothing == "time" and "· time-weighted EMA ·" in pane_lines(app)[0]
        pane = await press(pilot, "e")
        raw_lines = pane_lines(app)
        assert pane.view.smoothing == "off" and "· raw ·" in raw_lines[0]
        assert "· raw" not in raw_lines[-1]  # no faint points: the line is the raw series
        assert raw_lines[1:-3] != ema_lines[1:-3]  # the plot itself changed
        pane = await press(pilot, "e")
        assert pane.view.smoothing == "ema"


async def test_time_weighted_ema_differs_from_ema_across_the_recorded_pause(deck_home):
    series = loss_runs.recorded(loss_runs.CURRENT)  # ten minutes between steps 149 and 150
    ema, timed = trace(series, "loss", "ema", "step"), trace(series, "loss", "time", "step")
    after_pause = ema.xs.index(150.0)
    # the points before the pause are minutes old: the time-weighted trend starts afresh,
    # the count-based EMA still leans on them
    assert timed.trend[after_pause] == pytest.approx(timed.raw[after_pause], abs=1e-6)
    assert abs(ema.trend[after_pause] - ema.raw[after_pause]) > 1e-2
    assert timed.trend[after_pause - 1] != pytest.approx(timed.raw[after_pause - 1], abs=1e-3)


async def test_pin_a_baseline_of_the_same_family_then_unpin_it(deck_home):
    app = recorded_app(deck_home)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.press("b")
        await pilot.pause(0.1)
        picker = app.screen
        assert isinstance(picker, ChoiceScreen)
        offered = [value for value, _ in picker.choices]
        assert offered == [loss_runs.BASELINE]  # not the other model's job, not the failed one
        assert picker.title_text == "Compare with which run of smollm2@1?"
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        pane = app.dashboard.query_one(LossPane)
        assert pane.baseline is not None and pane.baseline.job_id == loss_runs.BASELINE
        lines = pane_lines(app)
        assert "vs 9d7e31" in lines[0] and "━ baseline 9d7e31" in lines[-1], lines
        await pilot.press("b")
        await pilot.pause(0.1)
        assert app.screen.choices[0] == ("__unpin__", "unpin 9d7e31")
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert pane.baseline is None and "baseline" not in pane_lines(app)[-1]


async def test_x_axis_cycles_step_tokens_wall_time_with_both_runs_aligned(deck_home):
    app = recorded_app(deck_home)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        app.dashboard.pin_baseline(loss_runs.BASELINE)
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        pane = await press(pilot, "w")
        lines = pane_lines(app)
        assert pane.view.axis == "tokens" and "tokens seen" in lines[-2]
        # the baseline gives way to the axis in the title; the legend still names it
        assert lines[0].startswith("╭─ Loss · EMA span 12 · step 240/300 · loss 0.970 · by tokens "
                                   "seen ─"), lines[0]
        assert "━ baseline 9d7e31" in lines[-1]
        assert any(label in lines[-3] for label in ("200k", "400k", "500k", "1M")), lines[-3]
        current = trace(pane.series, "loss", "off", "tokens")
        base = trace(pane.baseline, "loss", "off", "tokens")
        assert current.xs[0] == 2 * 8 * 512 and base.xs[0] == 2 * 4 * 512  # batch 8 vs 4
        pane = await press(pilot, "w")
        lines = pane_lines(app)
        assert pane.view.axis == "time" and "wall time" in lines[-2]
        assert any(label.endswith("m") for label in lines[-3].split()), lines[-3]
        pane = await press(pilot, "w")
        assert pane.view.axis == "step" and "step" in pane_lines(app)[-2]


async def test_best_eval_and_newest_checkpoint_are_marked(deck_home):
    app = recorded_app(deck_home)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        text = "\n".join(pane_lines(app))
    series = loss_runs.recorded(loss_runs.CURRENT)
    assert series.checkpoints == (80.0, 160.0, 240.0)
    best = min(series.eval_loss)
    assert f"◆ best eval {best:.3f} @240" in text and "│ checkpoint @240" in text
    assert text.count("◆") >= 2  # in the legend and on the plot


async def test_palette_entries_set_the_same_views(deck_home):
    app = recorded_app(deck_home)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        entries = {title: (command, help_text)
                   for title, command, help_text in loss_entries(app.dashboard)}
        assert entries["Loss: show learning rate"][1] == "key: m"
        entries["Loss: show learning rate"][0]()
        entries["Loss: add memory on the right axis"][0]()
        entries["Loss: smoothing time-weighted EMA"][0]()
        entries["Loss: x axis wall time"][0]()
        await pilot.pause(0.05)
        pane = app.dashboard.query_one(LossPane)
        assert (pane.view.signal, pane.view.second, pane.view.smoothing, pane.view.axis) == (
            "learning_rate", "memory_bytes", "time", "time")
        assert "Loss: compare with another run (pin or unpin a baseline)" in entries
        assert "loss pane" in app.dashboard.help_text() and "m " in app.dashboard.help_text()
