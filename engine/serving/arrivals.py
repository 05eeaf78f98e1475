"""Requests between their arrival and their submit: an idle scheduler waits a moment for them,
so requests that arrive together are prefilled together.

Why: measured here (4 streaming clients starting at once, SmolLM2-135M on 2 cores), the four
requests arrived within 7 ms, but reading and tokenizing each took 1-10 ms, so the idle
scheduler started a forward for the first one alone; the other three waited for that forward
(16-42 ms), then for their own: first tokens after 70-90 ms, against 50-55 ms when all four
start in one forward.

Only an idle scheduler waits (nothing running: no stream is delayed), at most GATHER_SECONDS,
and only while a request is actually being read: a lone request never waits. A request counts
from the moment its handler starts (before its body is read, before a version is picked): one
count per server, shared by the versions it serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

GATHER_SECONDS = 0.01  # reading and tokenizing a short prompt took 1-10 ms here


class Arrival:
    """One request being read; counted until submitted or dropped."""

    __slots__ = ("counted",)

    def __init__(self) -> None:
        self.counted = True


class Arrivals:
    """The requests being read right now."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.count = 0

    @contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Around reading a request until it is submitted (pass the arrival to `submit`, which
        counts it out once the request is queued) or given up."""
        arrival = Arrival()
        with self._condition:
            self.count += 1
        try:
            yield arrival
        finally:
            self.settle(arrival)

    def settle(self, arrival: Arrival | None) -> None:
        """Count an arrival out (once; None: nothing to count)."""
        if arrival is None:
            return
        with self._condition:
            if arrival.counted:
                arrival.counted = False
                self.count -= 1
                self._condition.notify_all()

    def gather(self, seconds: float = GATHER_SECONDS) -> None:
        """Wait until no request is being read, at most `seconds` (the lock not held)."""
        deadline = time.monotonic() + seconds
        with self._condition:
            while self.count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._condition.wait(left)
