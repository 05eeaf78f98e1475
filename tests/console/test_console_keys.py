"""Pilot tests of every key path: deploy and rollback (confirm yes and no) against a real
registry, dimmed keys, read-only mode, filter, pause, theme, help, details, palette, quit."""

from __future__ import annotations

import dataclasses

import pytest

from tests.console.console_helpers import fixed_app, wait_until_loaded

from console import replay
from console.app import ModeldeckApp
from console.data import Availability, JobsPanel, ModelsPanel
from console.screens.details import DetailsScreen
from console.screens.modals import ChoiceScreen, ConfirmScreen
from engine import actions

pytestmark = pytest.mark.anyio


def events_text(app) -> str:
    pane = app.dashboard.query_one("#events")
    return "\n".join(event.text for event in (*pane.session_events, *pane.panel.events))


def serving(deck) -> str:
    return deck.registry.deployment("local").ref


async def test_deploy_confirmed_moves_the_pointer_and_reports(two_version_deck):
    app = ModeldeckApp(two_version_deck, refresh_s=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        assert app.dashboard.query_one("#models").selected_row().ref == "tiny@2"
        await pilot.press("d")
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("enter")  # the first target: local
        await pilot.pause(0.3)
        assert isinstance(app.screen, ConfirmScreen)
        assert "tiny@1 -> tiny@2" in str(app.screen.changes)
        await pilot.press("y")
        for _ in range(100):
            await pilot.pause(0.02)
            if "deploy tiny@2 to local:" in events_text(app):
                break
        assert "deploy local: tiny@1 -> tiny@2" in events_text(app)
        assert "deploy tiny@2 to local: deploy local" not in events_text(app)  # said once
    assert serving(two_version_deck) == "tiny@2"


async def test_deploy_declined_changes_nothing(two_version_deck):
    app = ModeldeckApp(two_version_deck, refresh_s=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.press("d", "enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, ConfirmScreen)
        assert "cancelled" in events_text(app)
    assert serving(two_version_deck) == "tiny@1"
    assert [entry.verb for entry in actions.audit(two_version_deck)].count("deploy") == 1


async def test_rollback_confirmed_and_declined(two_version_deck):
    actions.deploy(two_version_deck, actions.DeployRequest("tiny@2", "local"))
    app = ModeldeckApp(two_version_deck, refresh_s=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.press("r", "enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, ConfirmScreen)
        assert "tiny@2 -> tiny@1" in str(app.screen.changes)
        await pilot.press("escape")  # declined
        await pilot.pause(0.1)
        assert serving(two_version_deck) == "tiny@2"
        await pilot.press("r", "enter")
        await pilot.pause(0.3)
        await pilot.press("y")
        for _ in range(100):
            await pilot.pause(0.02)
            if "rollback local:" in events_text(app):
                break
    assert serving(two_version_deck) == "tiny@1"


async def test_deploy_error_is_reported_not_raised(two_version_deck):
    """A version deleted from under the console: the engine's error text reaches events."""
    app = ModeldeckApp(two_version_deck, refresh_s=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        models = app.dashboard.query_one("#models")
        ghost = dataclasses.replace(models.panel.rows[0], ref="tiny@9")
        models.show(dataclasses.replace(models.panel, rows=(ghost,)))
        await pilot.pause(0.05)
        await pilot.press("d", "enter")
        for _ in range(100):
            await pilot.pause(0.02)
            if "tiny@9" in events_text(app):
                break
        assert not isinstance(app.screen, ConfirmScreen)
        assert "deploy tiny@9 to local:" in events_text(app)
    assert serving(two_version_deck) == "tiny@1"


async def test_keys_that_make_no_sense_are_dimmed(deck):
    empty = dataclasses.replace(replay.snapshot(), models=ModelsPanel(), jobs=JobsPanel(),
                                availability=Availability("fine-tuning is not built", None, None))
    app = fixed_app(deck, empty)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        screen = app.dashboard
        for action in ("deploy", "rollback", "finetune", "compress", "cancel_job"):
            assert screen.check_action(action, ()) is None, action
        assert "unavailable: the deck has no models yet" in screen.help_text()
        await pilot.press("d", "r", "f", "c", "x")
        await pilot.pause(0.1)
        assert app.screen is screen  # nothing opened
        assert screen.check_action("pause", ()) is True


async def test_finetune_dimmed_with_reason_while_engine_lacks_it(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        screen = app.dashboard
        screen.availability = Availability("no finetune verb", "no compress verb", "no cancel verb")
        assert screen.refusal("finetune") == "no finetune verb"
        screen.palette_run("compress")
        await pilot.pause(0.05)
        assert app.screen is screen


async def test_cancel_only_for_a_running_job(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        screen = app.dashboard
        jobs = screen.query_one("#jobs")
        jobs.table.focus()
        assert jobs.selected_job().state == "running"
        assert screen.check_action("cancel_job", ()) is True
        await pilot.press("x")
        await pilot.pause(0.1)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause(0.05)
        await pilot.press("down")  # the compress job: finished
        assert jobs.selected_job().state == "finished"
        assert screen.check_action("cancel_job", ()) is None


async def test_readonly_hides_and_refuses_every_action(two_version_deck):
    app = ModeldeckApp(two_version_deck, readonly=True, refresh_s=30.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        screen = app.dashboard
        for action in ("deploy", "rollback", "finetune", "compress", "cancel_job"):
            assert screen.check_action(action, ()) is False, action
        await pilot.press("d", "r")
        await pilot.pause(0.1)
        assert app.screen is screen
        await screen.run_action("deploy")
        await pilot.pause(0.05)
        assert app.screen is screen
        footer_keys = {binding.action for (_, binding, enabled, _) in screen.active_bindings.values()
                       if app.screen.check_action(binding.action, ()) is not False}
        assert "deploy" not in footer_keys and "quit" in footer_keys
        from console.palette import DeckCommands
        from textual.command import CommandPalette

        titles = [title for title, _, _ in DeckCommands(screen).entries()]
        assert not any(title.startswith(("Deploy", "Roll back", "Fine-tune", "Compress", "Cancel"))
                       for title in titles), titles
        del CommandPalette
        from console.widgets.footer import DeckHeader

        assert "READ-ONLY" in screen.query_one(DeckHeader).text
    assert serving(two_version_deck) == "tiny@1"


async def test_filter_pause_theme_help_details_logscale_and_quit(deck):
    app = fixed_app(deck, refresh_s=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        screen = app.dashboard
        models = screen.query_one("#models")
        await pilot.press("slash", "@", "1", "enter")
        assert models.table.row_count == 1
        await pilot.press("escape")
        assert models.table.row_count == 4
        await pilot.press("p")
        assert screen.paused
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        calls = app.source.calls
        await pilot.pause(0.3)
        assert app.source.calls == calls  # nothing polled while paused
        first_theme = app.theme
        await pilot.press("t")
        assert app.theme != first_theme and app.theme in app.deck_theme_names
        loss = screen.query_one("#loss")
        await pilot.press("l")
        assert loss.log_scale
        await pilot.press("question_mark")
        assert isinstance(app.screen, DetailsScreen)
        await pilot.press("escape")
        models.table.focus()
        await pilot.press("enter")  # details of the selected version: fixed data is not in
        await pilot.pause(0.3)      # this deck, so the engine's error reaches the events pane
        assert "details of smollm2@" in events_text(app)
        await pilot.press("ctrl+p")
        await pilot.pause(0.1)
        from textual.command import CommandPalette

        assert isinstance(app.screen, CommandPalette)
        await pilot.press("escape")
        await pilot.press("p")  # resume: the polls start again
        for _ in range(100):
            await pilot.pause(0.02)
            if app.source.calls > calls:
                break
        assert app.source.calls > calls
        await pilot.press("q")
        await pilot.pause(0.1)
    assert app.return_code == 0


async def test_job_and_endpoint_details(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        app.dashboard.query_one("#jobs").table.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, DetailsScreen)
        assert "finetune-20260101-001000-2f182e" in app.screen.text
        await pilot.press("escape")
        app.dashboard.query_one("#endpoints").table.focus()
        await pilot.press("down", "enter")
        assert isinstance(app.screen, DetailsScreen)
        assert "vllm-01" in app.screen.text and "http://10.0.3.11:8000" in app.screen.text


async def test_tab_moves_between_panes_and_the_palette_runs_commands(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        visited = set()
        for _ in range(6):
            visited.add(app.focused.parent.id)
            await pilot.press("tab")
        assert {"gpus", "endpoints", "models", "jobs", "events"} <= visited
        await pilot.press("ctrl+p")
        await pilot.pause(0.1)
        await pilot.press(*"Theme: modeldeck-light")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.theme == "modeldeck-light"
        await pilot.press("ctrl+p")
        await pilot.pause(0.1)
        await pilot.press(*"Pause or resume")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.dashboard.paused


class FailingSource:
    """A source whose GPU read always fails the same way (a fault that cannot be produced
    for real here: every real GPU failure is already data)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def gpus(self):
        raise RuntimeError("driver went away")


async def test_a_failing_source_is_reported_once_and_the_rest_keeps_going(deck):
    from console.sources import FixedSource

    app = ModeldeckApp(deck, FailingSource(FixedSource(replay.snapshot())), refresh_s=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.pause(0.6)  # several failed polls later
        texts = [event.text for event in app.dashboard.query_one("#events").session_events]
        assert texts.count("gpus: driver went away") == 1
        assert app.dashboard.query_one("#models").table.row_count == 4
