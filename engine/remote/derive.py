"""Rates and percentiles from two scrapes of one endpoint, and the merge of replicas.

Counters and histogram buckets are cumulative, so the work between two scrapes is their
difference. A counter that went down means the server restarted: as Prometheus does, the new
value is then taken as the increase. Percentiles follow Prometheus' `histogram_quantile`: linear
interpolation inside the bucket that holds the rank. Replicas of one model merge by summing
bucket deltas, never by averaging their percentiles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from types import MappingProxyType
from typing import TYPE_CHECKING

from engine.remote.metrics import (COUNTERS, FAILED_REQUESTS, GAUGES_AVERAGED, GAUGES_SUMMED,
                                   HISTOGRAMS, Histogram, Scrape)

if TYPE_CHECKING:
    from engine.slo_settings import SloBounds, SloSettings
    from engine.snapshots import SloStats

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Window:
    """What one endpoint did between two scrapes (or, with no earlier scrape, just its gauges)."""

    seconds: float | None
    tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    requests_per_s: float | None
    running: float | None
    waiting: float | None
    kv_cache_fraction: float | None
    latency_deltas: dict[str, Histogram]  # "ttft" | "itl" | "e2e" -> bucket increases


def counter_increase(before: float, after: float) -> float:
    return after - before if after >= before else after  # reset: counting started again at 0


def histogram_increase(before: Histogram, after: Histogram) -> Histogram:
    old = dict(before.buckets)
    if after.total < before.total or any(count < old.get(bound, 0.0)
                                         for bound, count in after.buckets):
        return after  # the server restarted between the scrapes
    buckets = tuple((bound, count - old.get(bound, 0.0)) for bound, count in after.buckets)
    return Histogram(buckets, _difference(before.sum, after.sum),
                     _difference(before.count, after.count))


def _difference(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return counter_increase(before, after)


def quantile(fraction: float, histogram: Histogram | None) -> float | None:
    """The value below which `fraction` of the observations fall; None with no observations."""
    if histogram is None or not histogram.buckets or histogram.total <= 0:
        return None
    rank = fraction * histogram.total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in histogram.buckets:
        if count >= rank and count > lower_count:
            if bound == float("inf"):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if lower_bound == 0.0 and bound <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def merge_histograms(histograms: Iterable[Histogram]) -> Histogram | None:
    """Sum buckets with the same upper bound (replicas of one model share their layout)."""
    totals: dict[float, float] = {}
    sums: list[float] = []
    counts: list[float] = []
    for histogram in histograms:
        for bound, count in histogram.buckets:
            totals[bound] = totals.get(bound, 0.0) + count
        if histogram.sum is not None:
            sums.append(histogram.sum)
        if histogram.count is not None:
            counts.append(histogram.count)
    if not totals:
        return None
    return Histogram(tuple(sorted(totals.items())), sum(sums) if sums else None,
                     sum(counts) if counts else None)


def window(before: Scrape | None, after: Scrape) -> Window:
    gauges = (after.gauge(GAUGES_SUMMED["running"]), after.gauge(GAUGES_SUMMED["waiting"]),
              after.gauge(GAUGES_AVERAGED["kv_cache"], averaged=True))
    seconds = after.at - before.at if before is not None else None
    if before is None or not seconds or seconds <= 0:
        return Window(None, None, None, None, *gauges, {})
    rates = tuple(_rate(before, after, COUNTERS[name], seconds)
                  for name in ("generation_tokens", "prompt_tokens", "requests"))
    deltas = {}
    for logical, candidates in HISTOGRAMS.items():
        found_after, found_before = after.histogram(candidates), before.histogram(candidates)
        if found_after and found_before and found_after[0] == found_before[0]:
            deltas[logical] = histogram_increase(found_before[1], found_after[1])
        elif found_after and not found_before:  # first observations since the last scrape
            deltas[logical] = found_after[1]
    tokens, prompt_tokens, requests = rates
    return Window(seconds, tokens, prompt_tokens, requests, *gauges, deltas)


def _rate(before: Scrape, after: Scrape, candidates: tuple[str, ...], seconds: float) -> float | None:
    name = after.first(candidates)
    if name is None:
        return None
    # absent before: a labelled series appears on its first event (prometheus_client), from 0
    return counter_increase(before.values.get(name, 0.0), after.values[name]) / seconds


def percentiles(histogram: Histogram | None) -> tuple[float | None, ...]:
    return tuple(quantile(fraction, histogram) for fraction in QUANTILES)


@dataclass(frozen=True)
class VersionWindow:
    """One version's share of an endpoint's window (its series carry a `version` label)."""

    version: str
    measured: Window
    requests: float | None  # finished in the window
    failed: float | None  # of which ended in an error or were rejected


def version_windows(before: Scrape, after: Scrape) -> tuple[VersionWindow, ...]:
    """Each version present in `after`, over the same window; a version absent `before` (a
    candidate loaded inside the window) counts from zero, as a new labelled series does."""
    windows = []
    for version, later in after.versions.items():
        earlier = before.versions.get(version) or Scrape(before.at, MappingProxyType({}),
                                                         MappingProxyType({}),
                                                         MappingProxyType({}))
        earlier, later = _at(earlier, before.at), _at(later, after.at)
        requests_name = later.first(COUNTERS["requests"])
        requests = (counter_increase(earlier.values.get(requests_name, 0.0),
                                     later.values[requests_name]) if requests_name else None)
        failed = counter_increase(earlier.values.get(FAILED_REQUESTS, 0.0),
                                  later.values.get(FAILED_REQUESTS, 0.0))
        windows.append(VersionWindow(version, window(earlier, later), requests,
                                     failed if requests_name else None))
    return tuple(windows)


def _at(scrape: Scrape, at: float) -> Scrape:
    return scrape if scrape.at == at else replace(scrape, at=at)


# ---- SLO attainment and goodput -----------------------------------------------------------


def attainment(bound: float, histogram: Histogram | None) -> float | None:
    """The share (0..1) of the window's observations at or below `bound`; None with none.

    Requests in buckets whose upper bound is <= `bound` are within it. Inside the bucket that
    holds `bound` the count is interpolated linearly, as `quantile` (histogram_quantile) does:
    a bucket only says how many fell between its edges, not where. Past the last finite bucket
    (+Inf) nothing is known, so those requests count as missing the bound (an underestimate).
    """
    if histogram is None or not histogram.buckets or histogram.total <= 0:
        return None
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in histogram.buckets:
        if upper == float("inf"):
            break
        if bound <= upper:
            if bound <= lower_bound or upper <= lower_bound:
                within = lower_count
            else:
                within = lower_count + (count - lower_count) * (bound - lower_bound) / (upper - lower_bound)
            return min(1.0, max(0.0, within / histogram.total))
        lower_bound, lower_count = upper, count
    return min(1.0, lower_count / histogram.total)


def slo_stats(measured: Window, bounds: "SloBounds", requests: float | None,
              failed: float | None) -> "SloStats":
    """Attainment of each latency bound over the window, and goodput. The joint attainment (met
    every bound) is approximated by the product of the per-bound attainments: the histograms
    are separate, so which request missed which bound is unknown, and the product assumes the
    misses are independent. Failed requests (when counted) miss by definition: the joint is
    also multiplied by the success share."""
    from engine.snapshots import SloStats

    shares = {name: attainment(bound, measured.latency_deltas.get(name))
              for name, bound in bounds.latency_bounds.items()}
    error_rate = failed / requests if failed is not None and requests else None
    joint: float | None = 1.0
    for share in shares.values():
        joint = None if share is None or joint is None else joint * share
    if joint is not None and error_rate is not None:
        joint *= 1.0 - error_rate
    elif joint is not None and not shares:
        joint = None  # only an error-rate bound, and no request was counted
    tokens, rate = measured.tokens_per_s, measured.requests_per_s
    limit = bounds.error_rate
    return SloStats(
        ttft=shares.get("ttft"), itl=shares.get("itl"), e2e=shares.get("e2e"),
        error_rate=error_rate,
        error_rate_met=error_rate <= limit if error_rate is not None and limit is not None else None,
        joint=joint,
        goodput_requests_per_s=rate * joint if rate is not None and joint is not None else None,
        goodput_tokens_per_s=tokens * joint if tokens is not None and joint is not None else None,
        ttft_bound_s=bounds.ttft_s, itl_bound_s=bounds.itl_s, e2e_bound_s=bounds.e2e_s,
        error_rate_bound=limit, target=bounds.target_share)


def windowed_slo(measured: Window, parts: tuple[VersionWindow, ...], slo: "SloSettings",
                 model: str | None, override: "SloBounds | None" = None,
                 ) -> tuple["SloStats | None", dict[str, "SloStats | None"]]:
    """An endpoint's attainment and each of its versions', each against its own resolved bounds
    (engine.slo_settings: the endpoint's override, then its model's, then [slo]). A modeldeck
    server names its model in its versions (`name@version`): that name wins over `model`."""
    from engine.slo_settings import model_of

    per_version = {}
    for part in parts:
        bounds = slo.resolve(model_of(part.version), override)
        per_version[part.version] = (slo_stats(part.measured, bounds, part.requests, part.failed)
                                     if bounds is not None else None)
    served = {model_of(part.version) for part in parts}
    bounds = slo.resolve(served.pop() if len(served) == 1 else model, override)
    if bounds is None:
        return None, per_version
    # failed requests are only counted per version (a modeldeck server): their sum, else None
    counted = [(part.requests, part.failed) for part in parts
               if part.requests is not None and part.failed is not None]
    requests = sum(pair[0] for pair in counted) if counted else None
    failed = sum(pair[1] for pair in counted) if counted else None
    return slo_stats(measured, bounds, requests, failed), per_version


def merge_windows(windows: Iterable[Window]) -> Window:
    """Replicas of one model as one window: rates and gauges summed, buckets summed."""
    windows = list(windows)

    def total(name: str) -> float | None:
        known = [getattr(one, name) for one in windows if getattr(one, name) is not None]
        return sum(known) if known else None

    deltas = {}
    for logical in ("ttft", "itl", "e2e"):
        merged = merge_histograms(one.latency_deltas[logical] for one in windows
                                  if logical in one.latency_deltas)
        if merged is not None:
            deltas[logical] = merged
    seconds = max((one.seconds for one in windows if one.seconds), default=None)
    return Window(seconds, total("tokens_per_s"), total("prompt_tokens_per_s"),
                  total("requests_per_s"), total("running"), total("waiting"), None, deltas)
