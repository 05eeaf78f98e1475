"""The console's Fleet view: F (or the palette) opens it, the ssh poll runs off the UI thread
(keys work while a host hangs), rows show each host's state and data, enter opens a host."""

from __future__ import annotations

import threading

import pytest

from engine.remote.fleet import FleetSnapshot, HostState
from tests.console.console_helpers import fixed_app, screen_text

STATUS = {"kind": "status", "home": "/srv/deck-a", "deployments": [
    {"target": "local", "ref": "tiny@2", "state": "active"}],
    "server": {"state": "running", "url": "http://127.0.0.1:8471"},
    "jobs": {"running": 1, "failed": 0}}
WATCH = {"kind": "watch", "gpus": {"devices": [
    {"index": 0, "name": "H100", "memory_used_bytes": 2 << 30, "memory_total_bytes": 80 << 30}]},
    "host": {"memory_used_bytes": 4 << 30, "memory_total_bytes": 64 << 30},
    "models": [{"model": "tiny", "tokens_per_s": 42.0}]}
SNAPSHOT = FleetSnapshot((
    HostState("gpu-a", "ops@gpu-a", "up", None, 0.2, 0.0, STATUS, WATCH),
    HostState("gpu-b", "ops@gpu-b", "down", "connection refused", 0.1, 0.0)))


class HeldPoll:
    """A poll that blocks until released, as a host that hangs would (counts the calls)."""

    def __init__(self) -> None:
        self.release, self.calls = threading.Event(), 0

    def __call__(self) -> FleetSnapshot:
        self.calls += 1
        assert self.release.wait(10)
        return SNAPSHOT


@pytest.mark.anyio
async def test_fleet_view_polls_off_the_ui_thread_and_opens_a_host(deck, monkeypatch) -> None:
    from console.screens import fleet as fleet_screen

    held = HeldPoll()
    monkeypatch.setattr(fleet_screen, "deck_poll", lambda deck: held)
    app = fixed_app(deck)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("F")
        await pilot.pause(0.1)
        assert isinstance(app.screen, fleet_screen.FleetScreen)
        await pilot.press("r", "r")  # the UI answers while the poll hangs; no second poll
        assert "polling the hosts" in screen_text(app) and held.calls == 1
        held.release.set()
        for _ in range(100):
            await pilot.pause(0.02)
            if app.screen.snapshot is not None:
                break
        text = screen_text(app)
        assert "gpu-a" in text and "tiny@2" in text and "42.0" in text
        assert "connection refused" in text and "1 up, 0 stale, 1 down" in text
        await pilot.press("enter")
        await pilot.pause(0.1)
        details = app.screen.text
        assert "/srv/deck-a" in details and "H100" in details and "tiny@2" in details
        await pilot.press("escape", "escape")
        await pilot.pause(0.05)
        assert app.screen is app.dashboard


@pytest.mark.anyio
async def test_palette_lists_the_fleet_view(deck) -> None:
    from console.palette import DeckCommands

    app = fixed_app(deck)
    async with app.run_test(size=(100, 30)):
        provider = DeckCommands(app.screen)
        titles = [title for title, _, _ in provider.entries()]
        assert "Fleet: hosts over ssh" in titles


def test_move_text_says_which_hosts_could_not_be_reversed() -> None:
    from console.commands.fleet_cmds import _move_text, fleet_text
    from engine.actions.fleet import FleetRequest, FleetResult, FleetStep

    steps = (FleetStep("a", "deploy", True, "tiny@1 -> tiny@2", "tiny@2", "tiny@1"),
             FleetStep("c", "deploy", True, "nothing -> tiny@1", "tiny@1", None),
             FleetStep("b", "deploy", False, "remote modeldeck failed (exit 1): gate failed"),
             FleetStep("c", "reverse", False, "not reversed: nothing served before"),
             FleetStep("a", "reverse", True, "tiny@2 -> tiny@1"))
    text = _move_text(FleetResult(FleetRequest("deploy", ("a", "c", "b"), "tiny@2"), steps, "b",
                                  "gate failed"))
    assert "stopped at host b: gate failed" in text
    assert "NOT reversed: c (not reversed: nothing served before)" in text
    assert "a (" not in text.splitlines()[-1]
    assert "1 up, 0 stale, 1 down" in fleet_text(SNAPSHOT, with_watch=True)
