"""Test-only pause points, used to SIGKILL a process at a chosen instant inside an action.

Inert unless MODELDECK_TEST_PAUSE names the point: then the process writes the point's name to
MODELDECK_TEST_PAUSE_FILE and sleeps until it is killed.

slow_version_delay: a test-only slowdown of one served version (the rollout tests' slow
candidate), inert unless MODELDECK_TEST_SLOW_VERSION is `NAME@VERSION:SECONDS`.
"""

from __future__ import annotations

import os
import time


def pause_point(name: str) -> None:
    if os.environ.get("MODELDECK_TEST_PAUSE") != name:
        return
    marker = os.environ.get("MODELDECK_TEST_PAUSE_FILE")
    if marker:
        with open(marker, "w") as handle:
            handle.write(name)
    while True:
        time.sleep(0.05)


def slow_version_delay(version_ref: str) -> float:
    """Seconds each model step of version_ref should sleep (0 unless the test variable names it)."""
    ref, _, seconds = os.environ.get("MODELDECK_TEST_SLOW_VERSION", "").rpartition(":")
    if ref != version_ref:
        return 0.0
    try:
        return max(0.0, float(seconds))
    except ValueError:
        return 0.0
