"""Telemetry fixtures: the recorded /metrics bodies, a loopback replay server, GPU readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.telemetry.replay_server import ReplayServer

# CI clones the repository with shared/ beside it.
METRICS_FIXTURES = REPO.parent / "shared" / "fixtures" / "metrics"
GPU_READINGS = Path(__file__).parent / "fixtures" / "gpu-8x-h100.jsonl"


def recorded(name: str) -> str:
    path = METRICS_FIXTURES / name
    if not path.exists():
        pytest.fail(f"recorded /metrics fixture missing: {path} (shared/ must sit beside the repo)")
    return path.read_text()


@pytest.fixture
def replay_server():
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture
def gpu_readings() -> Path:
    return GPU_READINGS
