"""The console samples, so it evaluates [[alerts]]: a firing rule shows in Events, as a toast,
and rings the bell when the rule asks."""

from __future__ import annotations

import pytest

from tests.console.console_helpers import record_toasts, screen_text, wait_until_loaded
from tests.console.test_console_sources import replayed_sampler

pytestmark = pytest.mark.anyio

RULE = """
[[alerts]]
name = "gpu3-warm"
when = "gpu.index == 3 and gpu.temperature_c > 40"
severity = "critical"
bell = true
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_alert_shows_in_events_with_a_toast_and_the_bell(deck, deck_home):
    from console.app import ModeldeckApp
    from console.sources import EngineSource

    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text(RULE)
    app = ModeldeckApp(deck, EngineSource(deck, sampler=replayed_sampler), refresh_s=0.1)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    toasts = record_toasts(app)  # before the first poll: the alert may fire on it
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_until_loaded(pilot, app)
        events = app.dashboard.query_one("#events")
        for _ in range(200):
            if any("gpu3-warm" in event.text for event in events.session_events):
                break
            await pilot.pause(0.05)
        texts = [event.text for event in events.session_events]
        fired = [text for text in texts if text.startswith("alert fired: gpu3-warm: gpu 3")]
        assert len(fired) == 1, texts
        assert [event.level for event in events.session_events if event.text == fired[0]] == ["error"]
        assert any("gpu3-warm" in toast for toast in toasts) and bells == [1]
        await pilot.pause(0.3)  # more polls: the alert is not announced again
        assert sum("gpu3-warm" in event.text for event in events.session_events) == 1
        assert "gpu3-warm" in screen_text(app)
    assert (deck_home / "alerts" / "events.jsonl").read_text().count('"fired"') == 1
