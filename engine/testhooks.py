"""Test-only pause points, used to SIGKILL a process at a chosen instant inside an action.

Inert unless MODELDECK_TEST_PAUSE names the point: then the process writes the point's name to
MODELDECK_TEST_PAUSE_FILE and sleeps until it is killed.
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
