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

It also waits, at most RETURN_GATHER_SECONDS, for the clients of a wave that just finished to
come back: clients that loop (an evaluation harness, an agent, a benchmark) send their next
request as their last one ends, so streams that ended in one step come back together, but not
in one moment. Measured here (bench/serve_vs_vllm.py, 4 clients): the four next requests came
5-30 ms after the step that ended their streams; the first was prefilled alone (21-48 ms), and
the other three waited for that forward and then their own: first tokens after 80-100 ms. Only
as many returns are awaited as streams ended, for at most RETURN_SECONDS after they ended: one
client that loops never waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

GATHER_SECONDS = 0.01  # reading and tokenizing a short prompt took 1-10 ms here
RETURN_GATHER_SECONDS = 0.02  # the longest wait for a finished wave's clients to come back
RETURN_SECONDS = 0.05  # after this, the clients of a finished wave are not coming back together


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
        self._returning = 0  # clients of streams that just ended, not back yet
        self._returning_until = 0.0  # monotonic time after which they are not awaited

    def pending(self) -> bool:
        """Whether a request is being read or a just-finished wave's clients are expected."""
        return bool(self.count) or self._returning_expected(time.monotonic())

    def finished(self, streams: int) -> None:
        """`streams` requests ended in one step: their clients may come back together."""
        with self._condition:
            self._returning = streams
            self._returning_until = time.monotonic() + RETURN_SECONDS

    def _returning_expected(self, now: float) -> bool:
        return self._returning > 0 and now < self._returning_until

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
                self._returning = max(0, self._returning - 1)  # one of them, perhaps: it is back
                self._condition.notify_all()

    def gather(self, seconds: float = GATHER_SECONDS,
               returning_seconds: float = RETURN_GATHER_SECONDS) -> None:
        """Wait until no request is being read, at most `seconds`, and until the clients of a
        wave that just finished are back, at most `returning_seconds` (the lock not held)."""
        started = time.monotonic()
        with self._condition:
            while True:
                now = time.monotonic()
                left = max(started + seconds - now if self.count else 0.0,
                           min(started + returning_seconds, self._returning_until) - now
                           if self._returning_expected(now) else 0.0)
                if left <= 0:
                    return
                self._condition.wait(left)
