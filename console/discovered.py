"""Engines running on this box that deck.toml does not name, for the Throughput pane.

Discovery (engine.actions.discover_endpoints: process table, listening ports, a few probes)
takes a second or more, so it runs in a daemon thread of its own at a slow cadence; the pane's
poll only reads the last result and never waits for a discovery. Off when MODELDECK_DISCOVERY
is `off` (the test suite sets it: other processes on a shared box would show up in its panes).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from console.data import EndpointRow
from engine.deck import Deck

DISCOVERY_INTERVAL_S = 60.0
DISCOVERED_REASON = "discovered: not in deck.toml (modeldeck endpoints discover --add)"


def discovery_enabled() -> bool:
    return os.environ.get("MODELDECK_DISCOVERY", "on").strip().lower() not in ("off", "0", "no",
                                                                               "false")


class DiscoveryWatch:
    """The newest discovery's engines that deck.toml lacks, refreshed every interval_s."""

    def __init__(self, deck: Deck, interval_s: float = DISCOVERY_INTERVAL_S) -> None:
        self.deck = deck
        self.interval_s = interval_s
        self.engines: tuple[Any, ...] = ()  # replaced whole by the thread: readers need no lock
        self.rounds = 0  # discoveries finished (tests wait for the first)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def rows(self, known_urls: tuple[str, ...]) -> tuple[EndpointRow, ...]:
        """Rows for the engines found, less any at `known_urls` (the local server's)."""
        self._ensure_started()
        from engine.remote.discover import same_endpoint

        return tuple(discovered_row(engine) for engine in self.engines
                     if not any(same_endpoint(engine.url, url) for url in known_urls if url))

    def close(self) -> None:
        self._stop.set()

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="modeldeck-discovery",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        from engine import actions

        while not self._stop.is_set():
            deck = Deck(self.deck.paths, self.deck.config_file)  # deck.toml as it is now
            try:
                found = actions.discover_endpoints(deck, actions.DiscoverRequest()).engines
                self.engines = tuple(engine for engine in found if not engine.configured)
            except Exception:  # a broken deck.toml or a process table we may not read:
                pass  # the pane keeps the last result; the other panes say what is wrong
            finally:
                deck.close()
                self.rounds += 1
            self._stop.wait(self.interval_s)


def discovered_row(engine: Any) -> EndpointRow:
    return EndpointRow(engine.suggested_name, engine.kind, "up", DISCOVERED_REASON, url=engine.url, discovered=True)
