"""deck.toml [console] record: the console writes the recording from its own sampler; a file
that is not a recording is refused before the screen opens; `record`'s own bad input is exit 2."""

from __future__ import annotations

import pytest

from console.app import ModeldeckApp
from engine.actions.telemetry import open_recording
from engine.deck import Deck
from engine.errors import BadInput
from tests.console.console_helpers import wait_until_loaded


@pytest.mark.anyio
async def test_the_console_records_what_its_sampler_reads(deck_home, tiny_model_dir):
    from engine import actions

    deck_home.mkdir(parents=True)
    (deck_home / "deck.toml").write_text('[console]\nrecord = "flight.jsonl"\n\n'
                                         "[telemetry]\ninterval_s = 0.1\n")
    deck = Deck.at(deck_home)
    app = ModeldeckApp(deck, refresh_s=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
        for _ in range(100):
            await pilot.pause(0.1)
            if app.recorder.frames >= 3 and "import" in (deck_home / "flight.jsonl").read_text():
                break
    recording = open_recording(deck_home / "flight.jsonl")  # relative: in the deck home
    assert len(recording) >= 3 and recording.deck["home"] == str(deck_home)
    assert [row["verb"] for _, row in recording.audit] == ["import"]
    assert recording.models_at(len(recording) - 1)["versions"][0]["model"] == "tiny"
    sequences = [recording.snapshot(index).sequence for index in range(len(recording))]
    assert sequences == sorted(set(sequences))  # one line per sampler tick, none twice
    deck.close()


def test_the_console_refuses_to_record_over_another_file(deck_home):
    deck_home.mkdir(parents=True)
    (deck_home / "notes.txt").write_text("my notes\n")
    (deck_home / "deck.toml").write_text('[console]\nrecord = "notes.txt"\n')
    deck = Deck.at(deck_home)
    with pytest.raises(BadInput, match="not a modeldeck recording"):
        ModeldeckApp(deck)
    assert (deck_home / "notes.txt").read_text() == "my notes\n"
    deck.close()


@pytest.mark.parametrize("arguments, message", [
    (("--max-bytes", "100"), "--max-bytes must be at least 4096"),
    (("--keep", "0"), "--keep must be at least 1"),
    (("--interval", "0"), "--interval must be at least"),
])
def test_record_bad_input_is_exit_2_and_writes_nothing(cli, tmp_path, arguments, message):
    path = tmp_path / "flight.jsonl"
    result = cli("record", str(path), "--count", "1", *arguments)
    assert result.code == 2 and message in result.stderr, result
    assert not path.exists()


def test_record_into_a_directory_is_exit_2(cli, tmp_path):
    result = cli("record", str(tmp_path), "--count", "1", "--local")
    assert result.code == 2 and "is a directory" in result.stderr, result


@pytest.mark.anyio
async def test_a_replay_says_what_it_is_and_how_to_move(cli, deck_home, tmp_path):
    from console.recording import REPLAY_REFUSAL, open_replay
    from tests.telemetry.conftest import GPU_READINGS

    path = tmp_path / "flight.jsonl"
    assert cli("record", str(path), "--count", "3", "--interval", "0.05", "--local",
               "--gpu-replay", str(GPU_READINGS)).code == 0
    path.write_bytes(path.read_bytes() + b'{"modeldeck_recording":1,"at":')  # a crash mid-line
    deck = Deck.at(deck_home)
    app = ModeldeckApp(deck, open_replay(str(path), deck), readonly=True, refresh_s=0.2)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        line = str(app.dashboard.query_one("#replay-status").render())
        assert "frame 1/3" in line and "1x  paused" in line and "1 torn line skipped" in line
        assert len(app.dashboard.query_one("#gpus").panel.gpus) == 8
        help_text = app.dashboard.help_text()
        assert "+SECONDS from the start" in help_text and REPLAY_REFUSAL in help_text
        await pilot.press("colon", "y", "enter")  # not a time: said, and nothing moves
        await pilot.pause(0.1)
        assert "frame 1/3" in str(app.dashboard.query_one("#replay-status").render())
        await pilot.press("escape", "minus", "plus", "plus")  # 1x is the least: 1, 2, 4
        await pilot.pause(0.3)
        assert "4x  paused" in str(app.dashboard.query_one("#replay-status").render())
    deck.close()
