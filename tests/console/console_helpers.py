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


def screen_text(app) -> str:
    """What the terminal shows now, as plain text (the active screen and what lies under it)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def record_toasts(app) -> list[str]:
    """Every toast message from now on (notify is wrapped, so toasts still show)."""
    messages: list[str] = []
    original = app.notify

    def notify(message, *args, **kwargs):
        messages.append(f"{kwargs.get('title') or ''} {message}".strip())
        return original(message, *args, **kwargs)

    app.notify = notify
    return messages
