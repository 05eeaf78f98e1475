"""Console fixtures: apps over fixed data (deterministic) or over a real deck with real
(tiny) model versions in the registry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def utc_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Event times render in local time: pin the zone so snapshots match on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def two_version_deck(deck, tiny_model_dir: Path, tiny_model_dir_b: Path):
    """A deck with tiny@1 and tiny@2 registered and tiny@1 serving on `local`."""
    from engine import actions

    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir_b, "tiny"))
    actions.deploy(deck, actions.DeployRequest("tiny@1", "local"))
    return deck


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio; the async tests run under anyio's plugin
