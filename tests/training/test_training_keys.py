"""The console's keys on a running fine-tune, against the real engine: C (checkpoint now),
V (pick a checkpoint, register it), h (stop early, confirmed). The same verbs as
`modeldeck jobs checkpoint|register-checkpoint|stop`."""

from __future__ import annotations

import pytest

from console.app import ModeldeckApp
from console.screens.modals import ChoiceScreen, ConfirmScreen
from engine import jobs
from tests.console.console_helpers import wait_until_loaded
from tests.console.test_console_jobs import session_texts, wait_for as wait_until
from tests.training.test_job_control import start_long
from tests.training.training_helpers import events_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def wait_for(pilot, condition) -> None:
    await wait_until(pilot, condition, tries=2400)  # a training job starts in seconds, not ms


async def test_checkpoint_register_and_stop_keys(tiny_deck, text_data):
    job = start_long(tiny_deck, text_data)
    app = ModeldeckApp(tiny_deck, refresh_s=0.5)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_until_loaded(pilot, app)
        pane = app.dashboard.query_one("#jobs")
        pane.table.focus()
        await wait_for(pilot, lambda: (pane.selected_job() is not None
                                       and pane.selected_job().state == "running"
                                       and events_of(tiny_deck, job.id, "progress")))
        await pilot.press("C")
        await wait_for(pilot, lambda: events_of(tiny_deck, job.id, "checkpoint"))
        step = events_of(tiny_deck, job.id, "checkpoint")[0]["step"]
        await pilot.press("V")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen))
        await pilot.press("enter")  # the newest checkpoint: the one just written
        await wait_for(pilot, lambda: "tiny@2" in session_texts(app))
        version = tiny_deck.registry.resolve("tiny@2")
        assert version.lineage["checkpoint_step"] == step and version.metrics["eval_loss"] > 0
        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: jobs.get_job(tiny_deck, job.id).terminal)
    done = jobs.get_job(tiny_deck, job.id)
    assert done.state == "finished" and done.result["version"] == "tiny@3"
    assert done.result["stopped_early_at_step"] >= step
