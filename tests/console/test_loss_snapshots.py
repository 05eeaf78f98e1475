"""The Loss pane with two recorded runs overlaid (the running job and a finished baseline of the
same model), at 80x24 and 160x50, and at 160x50 by tokens seen with a second signal on the right
axis. Update with --snapshot-update, deliberately, and read the SVG's text before accepting."""

from __future__ import annotations

import pytest

from console.app import ModeldeckApp
from console.sources import FixedSource
from console.widgets.table import DeckTable
from engine.deck import Deck
from tests.console import loss_runs
from tests.console.console_helpers import wait_until_loaded


def overlaid_app(deck_home) -> ModeldeckApp:
    return ModeldeckApp(Deck.at(deck_home), FixedSource(loss_runs.snapshot()), refresh_s=600.0)


async def pin_baseline(pilot, keys: tuple[str, ...] = ()) -> None:
    app = pilot.app
    await wait_until_loaded(pilot, app)
    app.dashboard.pin_baseline(loss_runs.BASELINE)
    await app.workers.wait_for_complete()
    for key in keys:
        await pilot.press(key)
    await pilot.pause(0.2)
    app.clear_notifications()  # the keys' toasts would cover the panes
    await pilot.pause(0.1)
    assert app.dashboard.query_one("#loss").baseline is not None
    for table in app.dashboard.query(DeckTable):  # the other panes keep their key columns
        if table.display:
            assert table.virtual_size.width <= table.scrollable_content_region.width, table.parent.id


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_two_runs_overlaid(snap_compare, deck_home, size):
    assert snap_compare(overlaid_app(deck_home), terminal_size=size, run_before=pin_baseline)


def test_two_runs_by_tokens_with_learning_rate_on_the_right(snap_compare, deck_home):
    async def keys(pilot):
        await pin_baseline(pilot, ("w", "n", "n"))

    assert snap_compare(overlaid_app(deck_home), terminal_size=(160, 50), run_before=keys)
