"""The console lists engines running on the box that deck.toml does not name, marked
`discovered`: found by a discovery thread of its own (the pane's poll never waits for one), a
real process on loopback (the stand-in for Ollama, tests/telemetry/fake_ollama.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from console import replay
from console.app import ModeldeckApp
from console.data import EndpointRow, EndpointsPanel
from console.discovered import DISCOVERED_REASON, DiscoveryWatch
from console.sources import EngineSource, FixedSource
from console.widgets.throughput_pane import ThroughputPane
from engine.deck import Deck
from tests.console.console_helpers import wait_until_loaded
from tests.telemetry.fake_ollama import start_fake_ollama


@pytest.fixture
def ollama(tmp_path):
    process, url = start_fake_ollama(tmp_path)
    yield url
    process.kill()
    process.wait(timeout=10)


def rows_at(source: EngineSource, url: str, timeout_s: float = 30.0) -> list[EndpointRow]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = [row for row in source.endpoints().endpoints if row.url == url]
        if rows:
            return rows
        time.sleep(0.1)
    return []


def test_an_engine_deck_toml_lacks_is_a_discovered_row(deck, ollama, monkeypatch):
    monkeypatch.setenv("MODELDECK_DISCOVERY", "on")
    source = EngineSource(deck)
    try:
        started = time.monotonic()
        source.endpoints()  # starts discovery in its own thread and returns without it
        assert time.monotonic() - started < 1.0 + 2.0  # 2.0: the sampler's first-tick wait
        (row,) = rows_at(source, ollama)
        assert row.discovered and row.kind == "ollama" and row.reason == DISCOVERED_REASON
        assert [t for t in threading.enumerate() if t.name == "modeldeck-discovery"]
    finally:
        source.close()


def test_an_engine_deck_toml_names_is_not_repeated(deck, deck_home, ollama, monkeypatch):
    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text(
        f'[[endpoints]]\nname = "mine"\nkind = "ollama"\nurl = "{ollama}"\n')
    watch = DiscoveryWatch(Deck.at(deck_home))
    try:
        deadline = time.monotonic() + 30
        watch.rows(())
        while watch.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch.rounds >= 1
        # other engines on a shared box may be found; the one deck.toml names must not be
        assert ollama not in [row.url for row in watch.rows(())]
    finally:
        watch.close()


@pytest.mark.anyio
async def test_the_throughput_pane_marks_discovered_rows(deck_home):
    row = EndpointRow("ollama-11434", "ollama", "up", DISCOVERED_REASON,
                      url="http://127.0.0.1:11434", discovered=True)
    known = EndpointRow("remote-a", "vllm", "up", tokens_per_s=12.0)
    panel = EndpointsPanel("ok", "", (known, row), window_s=10.0)
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replace(replay.snapshot(), endpoints=panel)),
                       refresh_s=600.0)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until_loaded(pilot, app)
        table = app.dashboard.query_one(ThroughputPane).table
        lines = [table.render_line(y).text for y in range(4)]
    assert any("ollama-11434 discovered" in line for line in lines), lines
    assert not any("remote-a discovered" in line for line in lines), lines
