"""The dashboard's layout at 80x24, 120x36 and 200x60 (and every shipped theme at 120x36),
against fixed, realistic data (several versions incl. a compressed one, a running and a
finished job, endpoints up and down, the local server running; no clocks, no host names),
with pytest-textual-snapshot. Update with --snapshot-update, deliberately, and look at them.

Before each picture is taken, every pane's table is checked to fit its pane: a picture alone
would not say that a pane scrolls sideways to reach its key columns."""

from __future__ import annotations

import pytest

from console import replay
from console.app import ModeldeckApp
from console.sources import FixedSource
from console.themes import BUILTIN_THEME_DIR, load_themes
from console.widgets.table import DeckTable
from engine.deck import Deck

SHIPPED_THEMES = load_themes([BUILTIN_THEME_DIR]).names
SIZES = [(80, 24), (120, 36), (200, 60)]


async def wait_for_data(pilot) -> None:
    app = pilot.app
    for _ in range(200):
        await pilot.pause(0.02)
        if app.dashboard.data_ready:
            break
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)
    for table in app.dashboard.query(DeckTable):
        if not table.display:  # the GPU table of a box without GPUs
            continue
        assert table.virtual_size.width <= table.scrollable_content_region.width, table.parent.id


def test_at_least_dark_light_and_high_contrast_are_shipped():
    assert {"modeldeck-dark", "modeldeck-light", "modeldeck-high-contrast"} <= set(SHIPPED_THEMES)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_dashboard_snapshot(snap_compare, deck_home, size: tuple[int, int]) -> None:
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replay.snapshot()), refresh_s=600.0)
    assert snap_compare(app, terminal_size=size, run_before=wait_for_data)


@pytest.mark.parametrize("theme", [name for name in SHIPPED_THEMES if name != "modeldeck-dark"])
def test_theme_snapshot(snap_compare, deck_home, theme: str) -> None:
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replay.snapshot()), theme_name=theme,
                       refresh_s=600.0)
    assert snap_compare(app, terminal_size=(120, 36), run_before=wait_for_data)


def test_no_gpu_snapshot_shows_the_host(snap_compare, deck_home) -> None:
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replay.snapshot(with_gpus=False)),
                       refresh_s=600.0)
    assert snap_compare(app, terminal_size=(80, 24), run_before=wait_for_data)
