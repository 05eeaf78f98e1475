"""A recorded session (a fine-tune job, a deploy to the running local server under load, a dead
endpoint) replayed in the console: Pilot and a real terminal (tmux). Seeking to the deploy
shows the deploy in Events and the local server's numbers of that moment; every action is
refused with the reason."""

from __future__ import annotations

import shlex
import shutil
import sys

import pytest

from console.adapters import endpoint_row
from console.app import ModeldeckApp
from console.recording import REPLAY_REFUSAL, RecordingSource
from console.widgets.common import fmt_number
from engine.actions.telemetry import open_recording
from engine.deck import Deck
from tests.conftest import REPO
from tests.console.console_helpers import record_toasts, wait_until_loaded
from tests.console.test_console_e2e_tmux import Tmux
from tests.recorder.session import deploy_frame, record_session

DEPLOY_TEXT = "deploy tiny@2 to local"


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_model_dir, tiny_model_dir_b):
    root = tmp_path_factory.mktemp("recorded")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELDECK_HOME", str(root / "deck"))
        patch.delenv("MODELDECK_CONFIG", raising=False)
        yield record_session(root, tiny_model_dir, tiny_model_dir_b)


def seek_text(recording, index: int) -> str:
    """+SECONDS that lands on frame `index` (a hair past its time, never before it)."""
    return f"+{recording.times[index] - recording.start + 0.001:.3f}"


def local_of(snapshot):
    return next(endpoint for endpoint in snapshot.endpoints if endpoint.name == "local")


def test_the_recording_holds_the_session(session):
    recording = open_recording(session.file)
    assert recording.torn == 0 and len(recording) > 10
    index = deploy_frame(recording)
    before, at = recording.snapshot(index - 1), recording.snapshot(index)
    assert local_of(at).status == "up" and local_of(at).tokens_per_s  # served under load
    dead = next(endpoint for endpoint in at.endpoints if endpoint.name == "dead")
    assert dead.status == "down" and "refused" in (dead.reason or "")
    verbs = [row["verb"] for _, row in recording.audit  # on one timeline, in the order done
             if row["verb"] in ("finetune", "cancel_job") or row["arguments"].get("ref") == "tiny@2"]
    assert verbs.index("finetune") < verbs.index("deploy") < verbs.index("cancel_job")
    results = [row["result"] for _, row in recording.audit if row["verb"] == "deploy"
               and row["arguments"].get("ref") == "tiny@2"]
    assert results[-1] == "ok"  # a pending result is recorded again once the gate answered
    jobs = recording.jobs_at(len(recording) - 1)
    assert [job["state"] for job in jobs if job["id"] == session.job_id] == ["cancelled"]
    running = recording.jobs_at(index)
    assert [job["state"] for job in running if job["id"] == session.job_id] == ["running"]
    assert [event for event in recording.events_until(session.job_id, len(recording) - 1)
            if event["type"] == "progress"], "the job's steps are on the timeline"
    assert before.taken_at < at.taken_at


@pytest.mark.anyio
async def test_replay_in_the_console_seeks_to_the_deploy(session):
    recording = open_recording(session.file)
    index = deploy_frame(recording)
    deck = Deck.at(session.home)
    source = RecordingSource(recording, deck)
    app = ModeldeckApp(deck, source, readonly=True, refresh_s=0.2)
    events = lambda: "\n".join(event.text for event in app.dashboard.query_one("#events").shown)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until_loaded(pilot, app)
        assert source.index() == 0 and DEPLOY_TEXT not in events()
        await pilot.press("colon")
        for key in seek_text(recording, index):
            await pilot.press({"+": "plus", ".": "full_stop"}.get(key, key))
        await pilot.press("enter")
        await wait_for(pilot, lambda: source.index() == index and DEPLOY_TEXT in events()
                       and shown_local(app).checked_at == local_of(recording.snapshot(index)).checked_at)
        expected = endpoint_row(local_of(recording.snapshot(index)))
        shown = shown_local(app)
        assert (shown.tokens_per_s, shown.requests_per_s, shown.ttft_p95_s) == \
            (expected.tokens_per_s, expected.requests_per_s, expected.ttft_p95_s)
        assert shown.tokens_per_s  # the load was on: numbers, not dashes
        assert f"frame {index + 1}/{len(recording)}" in status(app)
        rows = {row.name: row for row in app.dashboard.query_one("#endpoints").panel.endpoints}
        assert rows["dead"].status == "down"
        assert any(job.job_id == session.job_id for job in app.dashboard.query_one("#jobs").panel.jobs)

        toasts = record_toasts(app)
        await pilot.press("d")  # refused, with the reason: the recording cannot change
        await pilot.pause(0.1)
        assert any(REPLAY_REFUSAL in toast for toast in toasts), toasts
        assert deck.registry.deployment("local").ref == "tiny@2"  # as the session left it

        await pilot.press("comma")  # one frame back: before the deploy was audited
        await wait_for(pilot, lambda: source.index() == index - 1 and DEPLOY_TEXT not in events())
        await pilot.press("full_stop")
        await wait_for(pilot, lambda: source.index() == index and DEPLOY_TEXT in events())
        await pilot.press("4")
        await pilot.press("space")
        await wait_for(pilot, lambda: "4x  playing" in status(app))
        await wait_for(pilot, lambda: source.index() > index)
    deck.close()


def test_replay_in_a_real_terminal(session):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (make system-deps installs it)")
    recording = open_recording(session.file)
    index = deploy_frame(recording)
    tokens = fmt_number(local_of(recording.snapshot(index)).tokens_per_s)
    command = (f"cd {shlex.quote(str(REPO))} && MODELDECK_HOME={shlex.quote(str(session.home))} "
               f"TERM=xterm-256color {shlex.quote(sys.executable)} -m console.cli tui --replay "
               f"{shlex.quote(str(session.file))}; sleep 0.5")
    tmux = Tmux()
    try:
        tmux.run("new-session", "-d", "-s", "deck", "-x", "160", "-y", "50", command)
        screen = tmux.wait_for("REPLAY", f"frame 1/{len(recording)}", "paused", "dead")
        assert DEPLOY_TEXT not in screen
        tmux.keys(":")
        tmux.wait_for("seek to")
        tmux.keys(seek_text(recording, index), "Enter")
        screen = tmux.wait_for(f"frame {index + 1}/{len(recording)}", DEPLOY_TEXT)
        local_line = next(line for line in screen.splitlines() if "│ local " in line)
        assert f" {tokens} " in local_line, (tokens, local_line)
        tmux.keys("d")
        tmux.wait_for("replay of a recording")
        tmux.keys("q")
    finally:
        tmux.kill()


def shown_local(app):
    return next(row for row in app.dashboard.query_one("#endpoints").panel.endpoints
                if row.name == "local")


def status(app) -> str:
    return str(app.dashboard.query_one("#replay-status").render())


async def wait_for(pilot, condition, tries: int = 400) -> None:
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()
