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

It also waits, at most RETURN_GATHER_SECONDS, for the rest of a wave that just finished once one
of its clients is back: clients that loop (an evaluation harness, an agent, a benchmark) send
their next request as their last one ends, so streams that ended in one step come back together,
but not in one moment. Measured here (bench/serve_vs_vllm.py, 4 clients): the four next requests
came 5-30 ms after the step that ended their streams; the first was prefilled alone (21-48 ms),
and the other three waited for that forward and then their own: first tokens after 80-100 ms.
A client is known by its connection (a keep-alive connection's address and port), so only a
request from a client of the finished wave starts the wait, and only for the others of that wave
that ended less than RETURN_SECONDS ago: one client that loops never waits, and neither does a
new client (a first version waited for any request after a wave: a lone client that connected
as a four-client wave ended waited 20 ms for three clients that had left).
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

    __slots__ = ("counted", "client")

    def __init__(self, client: str | None = None) -> None:
        self.counted = True
        self.client = client  # its connection ("host:port"), None when unknown


class Arrivals:
    """The requests being read right now."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.count = 0
        self._returning: dict[str, float] = {}  # clients whose streams just ended -> until when
        self._back_until = 0.0  # a client of a finished wave came back: others awaited till then

    def pending(self) -> bool:
        """Whether a request is being read, or a finished wave's client is back and others of
        that wave are expected."""
        with self._condition:
            return bool(self.count) or self._returning_expected(time.monotonic())

    def finished(self, clients: list[str | None]) -> None:
        """The streams of `clients` ended in one step: they may come back together."""
        now = time.monotonic()
        with self._condition:
            self._forget_expired(now)
            self._returning.update((client, now + RETURN_SECONDS) for client in clients
                                   if client is not None)

    def _forget_expired(self, now: float) -> None:
        """Drop the clients not back in time: they left, or came back on another connection."""
        for client in [client for client, until in self._returning.items() if until <= now]:
            del self._returning[client]

    def _returning_expected(self, now: float) -> bool:
        """(The lock held.)"""
        if now >= self._back_until:
            return False
        return any(until > now for until in self._returning.values())

    @contextmanager
    def arriving(self, client: str | None = None) -> Iterator[Arrival]:
        """Around reading a request until it is submitted (pass the arrival to `submit`, which
        counts it out once the request is queued) or given up; `client`: its connection."""
        arrival = Arrival(client)
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
                until = self._returning.pop(arrival.client, None) if arrival.client else None
                now = time.monotonic()
                if until is not None and until > now:  # a finished wave's client is back
                    self._back_until = until
                self._forget_expired(now)
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
                           started + returning_seconds - now
                           if self._returning_expected(now) else 0.0)
                if left <= 0:
                    return
                self._condition.wait(left)
