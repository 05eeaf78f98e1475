"""The job keys against the real engine: f (the fine-tune form, prefilled from deck.toml),
c (choose a method), x (cancel, confirmed). The jobs are real detached processes; each is
cancelled as soon as the console shows it."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from console.app import ModeldeckApp
from console.screens.finetune_form import FinetuneForm
from console.screens.modals import ChoiceScreen, ConfirmScreen
from engine import actions, jobs
from tests.conftest import REPO
from tests.console.console_helpers import wait_until_loaded

pytestmark = pytest.mark.anyio
CORPUS = REPO / "engine" / "data" / "corpus.txt"


async def wait_for(pilot, condition, tries: int = 300) -> None:
    for _ in range(tries):
        await pilot.pause(0.05)
        if condition():
            return
    raise AssertionError("condition never held")


def session_texts(app) -> str:
    return "\n".join(event.text for event in app.dashboard.query_one("#events").session_events)


async def cancel_selected_job(pilot, app) -> str:
    jobs_pane = app.dashboard.query_one("#jobs")
    jobs_pane.table.focus()
    await wait_for(pilot, lambda: jobs_pane.selected_job() is not None
                   and jobs_pane.selected_job().cancellable)
    job_id = jobs_pane.selected_job().job_id
    await pilot.press("x")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await pilot.press("y")
    short = job_id.rsplit("-", 1)[-1]
    await wait_for(pilot, lambda: f"cancel job {short}:" in session_texts(app))
    return job_id


async def test_finetune_form_starts_a_job_and_x_cancels_it(deck, deck_home, tiny_model_dir):
    deck_home.mkdir(parents=True, exist_ok=True)
    deck_home.joinpath("deck.toml").write_text("[finetune]\nsteps = 5000\nbatch_size = 2\n")
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    app = ModeldeckApp(deck, refresh_s=0.5)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FinetuneForm))
        form = app.screen
        assert form.query_one("#field-steps", Input).value == "5000"  # from deck.toml
        assert form.query_one("#field-batch_size", Input).value == "2"
        await pilot.press("ctrl+s")  # no data file: refused in the form, nothing starts
        await wait_for(pilot, lambda: "training data file is required"
                       in str(form.query_one("#form-error").render()))
        assert jobs.list_jobs(deck) == [] and app.screen is form
        form.query_one("#field-data", Input).value = str(CORPUS)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "fine-tune tiny@1: job" in session_texts(app))
        job_id = await cancel_selected_job(pilot, app)
    assert jobs.get_job(deck, job_id).state == "cancelled"
    assert jobs.get_job(deck, job_id).spec["settings"]["steps"] == 5000


async def test_compress_choice_starts_a_job(deck, tiny_model_dir):
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    app = ModeldeckApp(deck, refresh_s=0.5)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen))
        await pilot.press("enter")  # the first method the engine offers
        await wait_for(pilot, lambda: "compress tiny@1" in session_texts(app))
        started = jobs.list_jobs(deck)
        assert [job.kind for job in started] == ["compress"], session_texts(app)
        if not started[0].terminal:
            jobs.cancel_job(deck, started[0].id)
