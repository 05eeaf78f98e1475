"""The fine-tune form and `modeldeck finetune` run the same fine-tune from the same deck.toml:
one settings schema (engine/finetune_settings.py), the form sends only what the user changed.
And the form is usable: first field focused, typed values survive an error, the new job gets
selected in the Jobs pane."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select, Static

from console.app import ModeldeckApp
from console.cli import build_parser
from console.commands.job_cmds import finetune_request
from console.screens.finetune_form import FinetuneForm, initial_values, request_values
from engine import actions, jobs
from engine.finetune_settings import build_settings
from tests.conftest import REPO
from tests.console.console_helpers import wait_until_loaded

CORPUS = REPO / "engine" / "data" / "corpus.txt"
# old names (seq_len, lora_r) on purpose: they are aliases in the one schema
DECK_TOML = '[finetune]\nmethod = "full"\nseq_len = 128\nlora_r = 4\nsteps = 7\n'


def cli_request(*flags: str) -> actions.FinetuneRequest:
    args = build_parser().parse_args(["finetune", "tiny@1", "--data", str(CORPUS), *flags])
    return finetune_request(args)


def form_request(defaults: dict, **typed: str) -> actions.FinetuneRequest:
    initial = initial_values(defaults)
    values = request_values("tiny@1", {**initial, "data": str(CORPUS), **typed}, initial)
    return actions.FinetuneRequest(**values)


def test_form_and_cli_build_the_same_request_from_the_same_deck_toml(deck, deck_home):
    deck_home.mkdir(parents=True, exist_ok=True)
    deck_home.joinpath("deck.toml").write_text(DECK_TOML)
    defaults = actions.finetune_defaults(deck)
    assert form_request(defaults) == cli_request()
    settings = build_settings(None, cli_request().overrides, defaults)
    assert (settings.method, settings.max_length, settings.lora_rank, settings.steps,
            settings.effective_lr) == ("full", 128, 4, 7, 5e-5)
    # a changed field is sent, as the flag would be
    assert form_request(defaults, max_length="64") == cli_request("--max-length", "64")
    assert form_request(defaults, method="lora") == cli_request("--method", "lora")


def test_emptying_steps_trains_by_epochs_as_the_cli_flag_does(deck, deck_home):
    deck_home.mkdir(parents=True, exist_ok=True)
    deck_home.joinpath("deck.toml").write_text(DECK_TOML)
    defaults = actions.finetune_defaults(deck)
    assert form_request(defaults, steps="", epochs="2") == cli_request("--epochs", "2")




async def wait_for(pilot, condition, tries: int = 300) -> None:
    for _ in range(tries):
        await pilot.pause(0.05)
        if condition():
            return
    raise AssertionError("condition never held")


@pytest.mark.anyio
async def test_typed_values_survive_a_validation_error(deck, tiny_model_dir):
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    app = ModeldeckApp(deck, refresh_s=0.5)
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FinetuneForm))
        form = app.screen
        # The first field takes focus once the screen has mounted, a tick or two after it is
        # pushed (a loaded machine lets the test look in between).
        await wait_for(pilot, lambda: app.focused is form.query_one("#field-data", Input))
        assert isinstance(form.query_one("#field-method"), Select)
        await pilot.press(*"/no/such/file.jsonl")  # typed, not pasted: focus behaviour counts
        form.query_one("#field-batch_size", Input).focus()
        await pilot.press("2")  # edits the value (4 -> 42): focusing selected nothing
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "no file at" in str(form.query_one("#form-error", Static).render()))
        assert app.screen is form  # still open
        assert form.query_one("#field-data", Input).value == "/no/such/file.jsonl"
        assert form.query_one("#field-batch_size", Input).value == "42"
    assert jobs.list_jobs(deck) == []


@pytest.mark.anyio
async def test_the_new_job_is_selected_and_the_loss_pane_follows_it(deck, deck_home, tiny_model_dir):
    deck_home.mkdir(parents=True, exist_ok=True)
    deck_home.joinpath("deck.toml").write_text("[finetune]\nsteps = 5000\nbatch_size = 2\n")
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    earlier = jobs.start_job(deck, "selftest", {"steps": 1})  # another job, listed first
    app = ModeldeckApp(deck, refresh_s=0.5)
    try:
        async with app.run_test(size=(140, 45)) as pilot:
            await wait_until_loaded(pilot, app)
            jobs_pane = app.dashboard.query_one("#jobs")
            await wait_for(pilot, lambda: jobs_pane.selected_key() == earlier.id)
            await pilot.press("f")
            await wait_for(pilot, lambda: isinstance(app.screen, FinetuneForm))
            app.screen.query_one("#field-data", Input).value = str(CORPUS)
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: len(jobs.list_jobs(deck, "finetune")) == 1)
            started = jobs.list_jobs(deck, "finetune")[0].id
            await wait_for(pilot, lambda: jobs_pane.selected_key() == started)
            await wait_for(pilot, lambda: app.dashboard.loaded_loss_job() == started)
            assert jobs.get_job(deck, started).spec["settings"]["steps"] == 5000
    finally:
        for job in jobs.list_jobs(deck):
            if not job.terminal:
                jobs.cancel_job(deck, job.id)
    assert earlier.id != started
