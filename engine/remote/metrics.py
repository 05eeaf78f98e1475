"""Prometheus text from serving engines -> the few numbers the console reads.

Names change between engines and versions (DESIGN.md lists them), so each logical metric has
candidate names tried in order, compared after normalising (lower case, `:` -> `_`, no `_total`
suffix): `vllm:generation_tokens_total` and `vllm_generation_tokens` are the same series.

A vLLM /metrics body is ~50 KB and ~600 lines, of which the console needs ~80. Parsing it whole
with prometheus-client's parser costs ~20 ms; 200 endpoints a second cannot afford that, so the
lines of interest are picked by exact sample name first and only those are handed to the parser. Label sets are summed per sample name (replicas, engines, finish reasons);
histogram buckets are summed per `le`. Each distinct series (`name{labels}`) goes through the
parser once; later scrapes of it only convert the value (see `_SERIES_CACHE`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

# logical name -> candidate series (normalised), first present wins
COUNTERS: dict[str, tuple[str, ...]] = {
    "generation_tokens": ("vllm_generation_tokens", "modeldeck_generation_tokens",
                          "llamacpp_tokens_predicted", "tgi_request_generated_tokens_sum"),
    "prompt_tokens": ("vllm_prompt_tokens", "modeldeck_prompt_tokens", "llamacpp_prompt_tokens",
                      "tgi_request_input_length_sum"),
    "requests": ("vllm_request_success", "modeldeck_request_success", "modeldeck_requests",
                 "tgi_request_success", "tgi_request_count"),
}
GAUGES_SUMMED: dict[str, tuple[str, ...]] = {
    "running": ("vllm_num_requests_running", "modeldeck_num_requests_running",
                "modeldeck_requests_running", "llamacpp_requests_processing",
                "tgi_batch_current_size"),
    "waiting": ("vllm_num_requests_waiting", "modeldeck_num_requests_waiting",
                "modeldeck_requests_waiting", "llamacpp_requests_deferred", "tgi_queue_size"),
    # the batch limit, where a server exports it (modeldeck's; vLLM's max-num-seqs is not a series)
    "batch_capacity": ("modeldeck_max_num_seqs",),
}
GAUGES_AVERAGED: dict[str, tuple[str, ...]] = {  # fractions 0..1: averaged over engines
    "kv_cache": ("vllm_kv_cache_usage_perc", "vllm_gpu_cache_usage_perc",
                 "modeldeck_kv_cache_usage_perc", "modeldeck_kv_cache_usage"),
}
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm_time_to_first_token_seconds", "modeldeck_time_to_first_token_seconds"),
    "itl": ("vllm_inter_token_latency_seconds", "vllm_time_per_output_token_seconds",
            "modeldeck_inter_token_latency_seconds", "modeldeck_time_per_output_token_seconds",
            "tgi_request_mean_time_per_token_duration"),
    "e2e": ("vllm_e2e_request_latency_seconds", "modeldeck_e2e_request_latency_seconds",
            "modeldeck_request_latency_seconds", "tgi_request_duration"),
}


def normalise(name: str) -> str:
    name = name.lower().replace(":", "_")
    return name[:-6] if name.endswith("_total") else name


def _raw_prefixes() -> tuple[str, ...]:
    """Line prefixes that can carry a candidate series, in both `a:b` and `a_b` spellings."""
    prefixes: set[str] = set()
    for table in (COUNTERS, GAUGES_SUMMED, GAUGES_AVERAGED, HISTOGRAMS):
        for candidates in table.values():
            for candidate in candidates:
                base = candidate.removesuffix("_sum")
                prefixes.add(base)
                engine, _, rest = base.partition("_")
                prefixes.add(f"{engine}:{rest}")
    return tuple(sorted(prefixes))


LINE_PREFIXES = _raw_prefixes()
# Every sample name a candidate can appear as: counters (`_total`), histograms' series.
SAMPLE_NAMES = frozenset(prefix + suffix for prefix in LINE_PREFIXES
                         for suffix in ("", "_total", "_bucket", "_sum", "_count"))


FAILED_REQUESTS = "modeldeck_requests_failed"  # per version: requests that ended in a failure
FAILED_OUTCOMES = ("error", "rejected")


class MalformedMetrics(ValueError):
    """The body is not Prometheus text the parser accepts."""


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts, sorted by upper bound; the last bound is +Inf."""

    buckets: tuple[tuple[float, float], ...]
    sum: float | None = None
    count: float | None = None

    @property
    def total(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0


@dataclass(frozen=True)
class Scrape:
    """One parsed /metrics body. `at` is time.monotonic() when it was fetched."""

    at: float
    values: Mapping[str, float]  # normalised sample name -> sum over label sets
    series_counts: Mapping[str, int]  # how many label sets were summed
    histograms: Mapping[str, Histogram]  # normalised base name -> buckets summed over labels
    # Series we read whose sample was NaN or ±Inf (left out of values and histograms): an
    # endpoint publishing them is degraded, its numbers unknown, never `up` with NaN rates.
    non_finite: tuple[str, ...] = ()
    # The same lines split by their `version` label (a modeldeck server during a deploy or a
    # rollout serves two versions side by side), each a Scrape of its own; failed requests
    # (outcome error or rejected) are counted under FAILED_REQUESTS.
    versions: Mapping[str, "Scrape"] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def known(self) -> bool:
        """Whether any series the console reads is present (else: not a serving /metrics)."""
        return bool(self.values or self.histograms)

    def first(self, candidates: tuple[str, ...]) -> str | None:
        return next((name for name in candidates if name in self.values), None)

    def gauge(self, candidates: tuple[str, ...], averaged: bool = False) -> float | None:
        name = self.first(candidates)
        if name is None:
            return None
        value = self.values[name]
        return value / self.series_counts[name] if averaged else value

    def histogram(self, candidates: tuple[str, ...]) -> tuple[str, Histogram] | None:
        name = next((candidate for candidate in candidates if candidate in self.histograms), None)
        return (name, self.histograms[name]) if name else None


def interesting_lines(body: str) -> list[str]:
    """The sample lines whose name is one we read (comments and other series dropped)."""
    kept = []
    for line in body.splitlines():
        if not line or line[0] == "#":
            continue
        end = line.find("{")
        if end < 0:
            end = line.find(" ")
        if line[:end] in SAMPLE_NAMES:
            kept.append(line)
    return kept


# "name{labels}" -> (normalised name, le bound or None, version label or None, failed outcome),
# or None for series we skip. The label part of a line is constant between scrapes; only the
# value changes. Each distinct series is parsed once with prometheus-client's parser and later
# scrapes only convert the value.
Series = tuple[str, float | None, str | None, bool]
_SERIES_CACHE: dict[str, Series | None] = {}
_SERIES_CACHE_LIMIT = 200_000


def parse_scrape(body: str, at: float) -> Scrape:
    """Parse the lines of interest (raises MalformedMetrics)."""
    total = _Sums()
    by_version: dict[str, _Sums] = {}
    non_finite: dict[str, None] = {}  # ordered set of the sample names
    for line in interesting_lines(body):
        series, value = _series_and_value(line)
        if series is None:
            continue
        if not math.isfinite(value):
            non_finite[_sample_name(line)] = None
            continue
        name, bound, version, failed = series
        total.add(name, bound, value)
        if version is not None:
            sums = by_version.setdefault(version, _Sums())
            sums.add(name, bound, value)
            if failed:
                sums.add(FAILED_REQUESTS, None, value)
    versions = {version: sums.scrape(at) for version, sums in sorted(by_version.items())}
    return replace(total.scrape(at), non_finite=tuple(non_finite),
                   versions=MappingProxyType(versions))


class _Sums:
    """Sample values summed per name and histogram buckets per `le`, for one Scrape."""

    def __init__(self) -> None:
        self.values: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, name: str, bound: float | None, value: float) -> None:
        if bound is not None:
            self.buckets[name][bound] += value
        else:
            self.values[name] += value
            self.counts[name] += 1

    def scrape(self, at: float) -> Scrape:
        values = self.values
        histograms = {base: Histogram(tuple(sorted(per_le.items())), values.get(f"{base}_sum"),
                                      values.get(f"{base}_count"))
                      for base, per_le in self.buckets.items()}
        return Scrape(at, MappingProxyType(dict(values)), MappingProxyType(dict(self.counts)),
                      MappingProxyType(histograms))


def _sample_name(line: str) -> str:
    end = line.find("{")
    return line[:end] if end >= 0 else line.partition(" ")[0]


def _series_and_value(line: str) -> tuple[Series | None, float]:
    close = line.rfind("}")
    if close >= 0:
        key, rest = line[:close + 1], line[close + 1:]
    else:
        key, _, rest = line.partition(" ")
    if key not in _SERIES_CACHE:
        if len(_SERIES_CACHE) >= _SERIES_CACHE_LIMIT:
            _SERIES_CACHE.clear()
        _SERIES_CACHE[key] = _parse_series(line)
    try:
        return _SERIES_CACHE[key], float(rest.split()[0])
    except (ValueError, IndexError):
        raise MalformedMetrics(f"malformed /metrics line: {line[:120]!r}") from None


def _parse_series(line: str) -> Series | None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        samples = [sample for family in text_string_to_metric_families(line)
                   for sample in family.samples]
    except (ValueError, TypeError, IndexError, KeyError) as error:
        raise MalformedMetrics(f"malformed /metrics: {error}"[:200]) from None
    if len(samples) != 1:
        raise MalformedMetrics(f"malformed /metrics line: {line[:120]!r}")
    sample = samples[0]
    if sample.name.endswith("_created"):
        return None
    name = normalise(sample.name)
    version = sample.labels.get("version")
    failed = sample.labels.get("outcome") in FAILED_OUTCOMES
    if name.endswith("_bucket") and "le" in sample.labels:
        return name[:-7], float(sample.labels["le"]), version, False
    return name, None, version, failed
