"""Rollouts from the console, against a real server on loopback (in a thread of the test, as
tests/serving does) serving the tiny versions: `d` -> "roll out gradually" starts one through
the engine's rollout verb; Throughput shows both versions and the step line from the server's
own /metrics and run/rollout.json; `o` pauses it and `a` aborts it after a confirmation."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.console.console_helpers import screen_text, wait_until_loaded

from console.app import ModeldeckApp
from console.screens.modals import ConfirmScreen
from engine import actions
from engine.deck import Deck

pytestmark = pytest.mark.anyio

DECK_TOML = """
[serve]
dtype = "float32"
[telemetry]
interval_s = 0.2
[rollout]
steps = [50, 100]
hold_s = 600
min_requests = 1000
"""


@pytest.fixture
def served(two_version_deck, deck_home):
    """tiny@1 serving on a real server in this process (server.json names it), tiny@2 ready."""
    from engine.serving.process import ServeOptions
    from engine.targets.local import local_server

    (deck_home / "deck.toml").write_text(DECK_TOML)
    deck = Deck.at(deck_home)
    server = local_server(deck, ServeOptions(port=0, dtype="float32"))
    server.load_deployed()
    thread = server.serve_in_thread()
    yield deck, server
    server.request_stop()
    thread.join(timeout=30)
    deck.close()


def state(deck) -> dict:
    return actions.rollout_state(deck).rollout or {}


def ask(url: str, count: int) -> list[str]:
    with httpx.Client(base_url=url, timeout=60) as client:
        return [client.post("/v1/completions", json={
            "model": "tiny", "prompt": "Once upon a time", "max_tokens": 2,
            "temperature": 0}).headers["x-modeldeck-version"] for _ in range(count)]


async def wait_for(pilot, condition, seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()


def versions_measured(app) -> bool:
    panel = app.dashboard.query_one("#endpoints").panel
    local = next(row for row in panel.endpoints if row.name == "local")
    seen = {row.ref: row for row in local.versions}
    return panel.rollout is not None and all(
        (seen.get(ref) and (seen[ref].requests or 0) > 0) for ref in ("tiny@1", "tiny@2"))


async def test_d_rolls_out_gradually_the_pane_shows_both_versions_and_o_a_steer_it(served):
    deck, server = served
    app = ModeldeckApp(deck, refresh_s=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_loaded(pilot, app)
        await wait_for(pilot, app.dashboard.local_server_running, 10)
        assert app.dashboard.query_one("#models").selected_row().ref == "tiny@2"
        assert app.dashboard.refusal("rollout_abort") is not None  # nothing to abort yet

        await pilot.press("d", "enter")  # deploy tiny@2 to the first target, local
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        assert "g: roll out gradually" in app.screen.changes
        await pilot.press("g")
        await wait_for(pilot, lambda: state(deck).get("status") == "running", 15)
        assert state(deck)["candidate"] == "tiny@2" and state(deck)["weight"] == 0.5
        assert deck.registry.deployment("local").ref == "tiny@1"  # not deployed at once

        answered = await asyncio.to_thread(ask, server.url, 24)
        assert set(answered) == {"tiny@1", "tiny@2"}
        await wait_for(pilot, lambda: versions_measured(app), 10)
        await pilot.pause(0.3)
        small = screen_text(app)
        assert "└tiny@1 50%" in small and "└tiny@2 50%" in small, small
        assert "0 err" in small, small
        assert "rollout 1/2 50%: hold" in small, small

        await pilot.resize_terminal(160, 50)
        await pilot.pause(0.5)
        wide = screen_text(app)
        assert "└tiny@1 50%" in wide and "└tiny@2 50%" in wide, wide
        assert "rollout tiny@2: step 1 of 2 (50%), holding" in wide, wide

        await pilot.press("o")
        await wait_for(pilot, lambda: state(deck).get("status") == "paused", 10)
        await wait_for(pilot, lambda: "rollout tiny@2: step 1 of 2 (50%), paused"
                       in screen_text(app), 5)

        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        assert state(deck)["status"] == "paused"  # nothing happens before the answer
        await pilot.press("y")
        await wait_for(pilot, lambda: state(deck).get("status") == "aborted", 10)
        await wait_for(pilot, lambda: "└tiny@2" not in screen_text(app), 5)
    assert deck.registry.deployment("local").ref == "tiny@1"
