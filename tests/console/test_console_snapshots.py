"""The dashboard's layout in every shipped theme at 80x24 and 160x50, against fixed data
(no clocks, no host names), with pytest-textual-snapshot. Update with --snapshot-update."""

from __future__ import annotations

import pytest

from console import replay
from console.app import ModeldeckApp
from console.sources import FixedSource
from console.themes import BUILTIN_THEME_DIR, load_themes
from engine.deck import Deck

SHIPPED_THEMES = load_themes([BUILTIN_THEME_DIR]).names
SIZES = [(80, 24), (160, 50)]


async def wait_for_data(pilot) -> None:
    app = pilot.app
    for _ in range(200):
        await pilot.pause(0.02)
        if app.dashboard.data_ready:
            break
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


def test_at_least_dark_light_and_high_contrast_are_shipped():
    assert {"modeldeck-dark", "modeldeck-light", "modeldeck-high-contrast"} <= set(SHIPPED_THEMES)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("theme", SHIPPED_THEMES)
def test_dashboard_snapshot(snap_compare, deck_home, theme: str, size: tuple[int, int]) -> None:
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replay.snapshot()), theme_name=theme,
                       refresh_s=600.0)
    assert snap_compare(app, terminal_size=size, run_before=wait_for_data)


def test_no_gpu_snapshot_shows_the_host(snap_compare, deck_home) -> None:
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replay.snapshot(with_gpus=False)),
                       refresh_s=600.0)
    assert snap_compare(app, terminal_size=(80, 24), run_before=wait_for_data)
