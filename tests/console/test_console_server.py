"""The `s` key starts the local server (a real detached process serving the deployed tiny
version) and stops it after a confirmation; the Throughput pane shows it up, then stopped."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import stop_leftover_server
from tests.console.console_helpers import wait_until_loaded

from console.app import ModeldeckApp
from console.screens.modals import ConfirmScreen
from engine import actions
from engine.deck import Deck

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server_deck(two_version_deck, deck_home):
    (deck_home / "deck.toml").write_text(f'[serve]\ndtype = "float32"\nport = {free_port()}\n')
    opened = Deck.at(deck_home)
    yield opened
    opened.close()
    stop_leftover_server(deck_home)


def local_row(app):
    return next(row for row in app.dashboard.query_one("#endpoints").panel.endpoints
                if row.name == "local")


async def wait_for(pilot, condition, seconds: float) -> None:
    for _ in range(int(seconds / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    assert condition()


async def test_s_starts_the_server_and_stops_it_after_confirming(server_deck):
    app = ModeldeckApp(server_deck, refresh_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        assert local_row(app).status == "stopped"  # a row even when it is not running

        await pilot.press("s")
        await wait_for(pilot, lambda: local_row(app).status == "up", 120)
        state = actions.local_server_state(server_deck)
        assert state["state"] == "running"

        def started_event_shown() -> bool:
            # The endpoints poll can see the server up a moment before the start call returns
            # and reports, so the event is waited for, not read at once.
            events = [event.text for event in app.dashboard.query_one("#events").session_events]
            return any(f"local server running at {state['url']}" in text for text in events)

        await wait_for(pilot, started_event_shown, 30)

        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("n")  # declined: still running
        await pilot.pause(0.2)
        assert actions.local_server_state(server_deck)["state"] == "running"

        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("y")
        await wait_for(pilot, lambda: local_row(app).status == "stopped", 60)
        assert actions.local_server_state(server_deck)["state"] == "stopped"

        def stopped_event_shown() -> bool:  # the poll can see it down before the stop reports
            events = [event.text for event in app.dashboard.query_one("#events").session_events]
            return any(text.startswith("local server stopped") for text in events)

        await wait_for(pilot, stopped_event_shown, 30)


async def test_s_is_dimmed_with_a_reason_when_nothing_is_deployed_to_local(deck, tiny_model_dir):
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    app = ModeldeckApp(deck, refresh_s=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        assert app.dashboard.refusal("toggle_server") == "nothing is deployed to local: deploy a version first"
        assert app.dashboard.check_action("toggle_server", ()) is None  # dimmed, not hidden
        await pilot.press("s")
        await pilot.pause(0.2)
        assert actions.local_server_state(deck)["state"] == "stopped"


async def test_a_report_arriving_after_the_panes_are_gone_is_dropped(deck):
    # An action's worker can finish while the app closes (the stop above, quit right after):
    # its report must not crash the worker on a screen whose panes were removed.
    app = ModeldeckApp(deck, refresh_s=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        await app.dashboard.query_one("#events").remove()
        app.dashboard.report("info", "local server stopped (pid 1)")  # no NoMatches
