"""The loss chart reads on its own: labelled axes, a legend, whole steps on x, even values on y,
the step / loss / ETA in the title, and a job with one point drawn as a marked point."""

from __future__ import annotations

from dataclasses import replace

import pytest

from console import replay
from console.app import ModeldeckApp
from console.data import LossSeries
from console.sources import FixedSource
from console.widgets.loss_pane import LossPane, LossView, even_ticks, title_of, whole_ticks
from engine.deck import Deck
from tests.console.console_helpers import screen_text, wait_until_loaded

ONE_POINT = LossSeries("finetune-20260101-001000-2f182e", (1.0,), (2.5,), max_steps=10, eta_s=95.0)


def pane_lines(app) -> list[str]:
    region = app.dashboard.query_one(LossPane).region
    lines = screen_text(app).splitlines()[region.y:region.bottom]
    return [line[region.x:region.right] for line in lines]


def test_ticks_are_whole_steps_and_even_values():
    assert whole_ticks(0, 2, 5) == ([0, 1, 2], ["0", "1", "2"])
    ticks, labels = whole_ticks(1, 997, 5)
    assert labels == ["200", "400", "600", "800"] and all(t == int(t) for t in ticks)
    assert even_ticks(0.83, 2.1, 4)[1] == ["1.0", "1.5", "2.0"]
    assert even_ticks(2.25, 2.75, 4)[1] == ["2.4", "2.6"]


def test_title_says_signal_smoothing_step_loss_and_eta():
    view = LossView()
    assert title_of(ONE_POINT, view) == "Loss 2f182e · EMA · step 1/10 · loss 2.500 · ETA 1m35s"
    assert title_of(replace(ONE_POINT, eta_s=None), LossView(log_scale=True)).endswith(
        "loss 2.500 (log)")
    assert title_of(ONE_POINT, view, 47) == "Loss · EMA · step 1/10 · loss 2.500 · ETA 1m35s"
    assert title_of(ONE_POINT, view, 46) == "Loss · EMA · step 1/10 · loss 2.500"  # narrow: id, then ETA go


@pytest.mark.anyio
@pytest.mark.parametrize("series", [ONE_POINT, replay.loss(300)], ids=["one-point", "a-run"])
async def test_the_chart_has_axes_a_legend_and_readable_ticks(deck_home, series):
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replace(replay.snapshot(), loss=series)),
                       refresh_s=600.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app, 0.2)
        lines = pane_lines(app)
    text = "\n".join(lines)
    assert f"step {int(series.train_steps[-1])}/{series.max_steps}" in lines[0], lines[0]
    assert "train" in text and "step" in text and "loss" in text, text
    if series.eval_loss:
        assert "eval" in text
    x_axis = next(line for line in reversed(lines[:-1]) if any(ch.isdigit() for ch in line))  # above the legend
    numbers = [word for word in x_axis.replace("│", " ").split() if word[0].isdigit()]
    assert numbers and all(word.isdigit() for word in numbers), x_axis  # whole steps only
    if len(series.train_loss) == 1:
        assert "●" in text, text  # the one reading is marked, not a lone braille dot


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_one_point_snapshot(snap_compare, deck_home, size):
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replace(replay.snapshot(), loss=ONE_POINT)),
                       refresh_s=600.0)

    async def loaded(pilot):
        await wait_until_loaded(pilot, app, 0.2)

    assert snap_compare(app, terminal_size=size, run_before=loaded)
