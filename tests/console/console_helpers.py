"""Helpers shared by the console tests ."""

from __future__ import annotations


async def wait_until_loaded(pilot, app, extra: float = 0.05) -> None:
    """Wait (bounded) until every pane got its first data; the polls run in threads."""
    for _ in range(200):
        await pilot.pause(0.02)
        if app.dashboard.data_ready:
            break
    assert app.dashboard.data_ready, "the panes never got their first data"
    await app.workers.wait_for_complete()
    await pilot.pause(extra)


def fixed_app(deck, snapshot=None, **kwargs):
    from console import replay
    from console.app import ModeldeckApp
    from console.sources import FixedSource

    source = FixedSource(snapshot or replay.snapshot())
    return ModeldeckApp(deck, source, refresh_s=kwargs.pop("refresh_s", 30.0), **kwargs)
