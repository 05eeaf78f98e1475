"""The local server's SLO attainment over a sliding window, exported on its /metrics.

Every observation is classified against its version's bounds (deck.toml [slo], resolved for the
version's model by engine.slo_settings) when it happens and counted in a one-second slot; a
scrape sums the slots of the last `window_s` seconds. The shares are therefore exact counts, not
bucket interpolations. As in engine.remote.derive.slo_stats, `joint` is the product of the
per-bound shares and the success share (which request missed which bound is not tracked), and
goodput is the window's rates times `joint`.

Exported gauges (absent for a version with no observation in the window):
- modeldeck_slo_attainment{version, slo="ttft"|"itl"|"e2e"|"joint"}  share 0..1
- modeldeck_slo_bound_seconds{version, slo="ttft"|"itl"|"e2e"}       the bound it is against
- modeldeck_slo_error_rate{version}, modeldeck_slo_error_rate_bound{version}
- modeldeck_slo_goodput_requests_per_second{version}, modeldeck_slo_goodput_tokens_per_second{version}
- modeldeck_slo_window_seconds                                        the window covered
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily

from engine.slo_settings import model_of

if TYPE_CHECKING:
    from engine.slo_settings import SloBounds, SloSettings

LATENCIES = ("ttft", "itl", "e2e")
# counts per slot: within / observed for each latency, then finished, failed, generated tokens
WITHIN, SEEN = {"ttft": 0, "itl": 2, "e2e": 4}, {"ttft": 1, "itl": 3, "e2e": 5}
FINISHED, FAILED, TOKENS, WIDTH = 6, 7, 8, 9
FAILED_OUTCOMES = ("error", "rejected")


class SloWindows:
    """Per-version slot rings; a prometheus-client collector (register it in a registry)."""

    def __init__(self, slo: "SloSettings", clock: Callable[[], float] = time.monotonic) -> None:
        self.slo, self.clock = slo, clock
        self.window_s = slo.window_s
        self.started = clock()
        self._lock = threading.Lock()
        self._slots: dict[str, deque[list[float]]] = {}  # version -> [[second, counts...], ...]
        self._bounds: dict[str, "SloBounds | None"] = {}

    def bounds(self, version: str) -> "SloBounds | None":
        if version not in self._bounds:
            self._bounds[version] = self.slo.resolve(model_of(version))
        return self._bounds[version]

    def token(self, version: str, first: bool, seconds: float) -> None:
        self._count(version, "ttft" if first else "itl", seconds, tokens=1)

    def finished(self, version: str, outcome: str, seconds: float | None, tokens: int) -> None:
        success = outcome in ("stop", "length")
        with self._lock:
            slot = self._slot(version)
            if slot is None:
                return
            slot[1 + FINISHED] += 1
            slot[1 + FAILED] += outcome in FAILED_OUTCOMES
        if success and seconds is not None:
            self._count(version, "e2e", seconds)

    def _count(self, version: str, latency: str, seconds: float, tokens: int = 0) -> None:
        with self._lock:
            slot = self._slot(version)
            if slot is None:
                return
            bound = getattr(self._bounds[version], f"{latency}_s")
            slot[1 + TOKENS] += tokens
            if bound is not None:
                slot[1 + SEEN[latency]] += 1
                slot[1 + WITHIN[latency]] += seconds <= bound

    def _slot(self, version: str) -> list[float] | None:
        """This second's counts for `version` (None: no bound applies to it). Holds the lock."""
        if self.bounds(version) is None:
            return None
        second = float(int(self.clock()))
        ring = self._slots.setdefault(version, deque())
        if not ring or ring[-1][0] != second:
            ring.append([second] + [0.0] * WIDTH)
            while ring and ring[0][0] <= second - self.window_s:
                ring.popleft()
        return ring[-1]

    def totals(self) -> dict[str, tuple[list[float], float]]:
        """Per version: the summed counts of the window and the seconds it covers."""
        now = self.clock()
        covered = max(1e-9, min(self.window_s, now - self.started))
        with self._lock:
            sums = {}
            for version, ring in self._slots.items():
                kept = [slot for slot in ring if slot[0] > now - self.window_s]
                if kept:
                    sums[version] = ([sum(slot[1 + index] for slot in kept)
                                      for index in range(WIDTH)], covered)
        return sums

    def collect(self) -> Iterator[Any]:
        attainment = GaugeMetricFamily("modeldeck_slo_attainment", "Share of the window's "
                                       "requests within the SLO bound (0..1)",
                                       labels=("version", "slo"))
        bound = GaugeMetricFamily("modeldeck_slo_bound_seconds", "The SLO latency bound",
                                  labels=("version", "slo"))
        error_rate = GaugeMetricFamily("modeldeck_slo_error_rate", "Share of the window's "
                                       "requests that failed", labels=("version",))
        error_bound = GaugeMetricFamily("modeldeck_slo_error_rate_bound", "The SLO error-rate "
                                        "bound", labels=("version",))
        good_requests = GaugeMetricFamily("modeldeck_slo_goodput_requests_per_second",
                                          "Requests/s that met the SLO", labels=("version",))
        good_tokens = GaugeMetricFamily("modeldeck_slo_goodput_tokens_per_second",
                                        "Generated tokens/s of requests that met the SLO",
                                        labels=("version",))
        for version, (counts, seconds) in sorted(self.totals().items()):
            limits = self.bounds(version)
            if limits is None:
                continue
            stats = version_stats(counts, seconds, limits)
            for name, seconds_bound in limits.latency_bounds.items():
                bound.add_metric((version, name), seconds_bound)
            for name, share in stats["shares"].items():
                attainment.add_metric((version, name), share)
            if stats["error_rate"] is not None:
                error_rate.add_metric((version,), stats["error_rate"])
            if limits.error_rate is not None:
                error_bound.add_metric((version,), limits.error_rate)
            if stats["joint"] is not None:
                good_requests.add_metric((version,), stats["requests_per_s"] * stats["joint"])
                good_tokens.add_metric((version,), stats["tokens_per_s"] * stats["joint"])
        window = GaugeMetricFamily("modeldeck_slo_window_seconds",
                                   "The window the SLO gauges cover")
        window.add_metric((), self.window_s)
        yield from (attainment, bound, error_rate, error_bound, good_requests, good_tokens, window)


def version_stats(counts: list[float], seconds: float, limits: "SloBounds") -> dict[str, Any]:
    """Shares (per bound with observations, and `joint`), error rate and rates of one version.
    `joint` is None while a bound has no observation yet (as derive.slo_stats has it)."""
    shares = {name: counts[WITHIN[name]] / counts[SEEN[name]]
              for name in LATENCIES if counts[SEEN[name]]}
    finished = counts[FINISHED]
    error_rate = counts[FAILED] / finished if finished else None
    joint: float | None = None
    if set(shares) == set(limits.latency_bounds) and (shares or error_rate is not None):
        joint = 1.0 - (error_rate or 0.0)
        for share in shares.values():
            joint *= share
        shares["joint"] = joint
    return {"shares": shares, "error_rate": error_rate, "joint": joint,
            "requests_per_s": finished / seconds, "tokens_per_s": counts[TOKENS] / seconds}
