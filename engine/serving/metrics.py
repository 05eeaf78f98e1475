"""The server's Prometheus metrics, in their own CollectorRegistry, every name `modeldeck_`.

The series mirror vLLM's (DESIGN.md, 'Metric names the console reads') so the console reads a
modeldeck server the way it reads a vLLM one. Series carry a `version` label (name@version)
because two versions serve side by side during a deploy.

With deck.toml [slo] the server also exports, per version, its SLO attainment over the last
[slo] window_s seconds (engine.serving.slo_window): exact shares counted from the observations
themselves, not interpolated from buckets.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from engine.serving.slo_window import SloWindows

if TYPE_CHECKING:
    from engine.serving.threads import GemmThreads
    from engine.slo_settings import SloSettings

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                   5.0, 10.0, 20.0, 60.0)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self, slo: "SloSettings | None" = None) -> None:
        self.registry = CollectorRegistry()
        self.slo = SloWindows(slo) if slo is not None and slo.any_configured else None
        labels = ("version",)
        self.generation_tokens = Counter("modeldeck_generation_tokens", "Generated tokens",
                                         labels, registry=self.registry)
        self.prompt_tokens = Counter("modeldeck_prompt_tokens", "Prompt tokens processed",
                                     labels, registry=self.registry)
        self.running = Gauge("modeldeck_num_requests_running", "Requests in the running batch",
                             labels, registry=self.registry)
        self.waiting = Gauge("modeldeck_num_requests_waiting", "Requests waiting for a slot",
                             labels, registry=self.registry)
        self.ttft = Histogram("modeldeck_time_to_first_token_seconds", "Time to first token",
                              labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram("modeldeck_inter_token_latency_seconds", "Time between tokens",
                             labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.e2e = Histogram("modeldeck_e2e_request_latency_seconds", "Request latency",
                             labels, buckets=E2E_BUCKETS, registry=self.registry)
        # A fraction 0..1 like vLLM's series of the same name (the console's poller reads it).
        self.kv_cache_usage = Gauge("modeldeck_kv_cache_usage_perc",
                                    "Fraction of the KV cache's token slots in use",
                                    labels, registry=self.registry)
        self.batch_size = Histogram("modeldeck_batch_size", "Sequences per decode step",
                                    labels, buckets=BATCH_BUCKETS, registry=self.registry)
        # The scheduler's batch limit ([serve] max_batch_size), so a reader can tell a queue
        # behind a full batch from one behind a batch with room (engine.telemetry.diagnosis).
        # Not per version: every version's scheduler has the same limit.
        self.max_num_seqs = Gauge("modeldeck_max_num_seqs",
                                  "The most sequences one scheduler step batches",
                                  registry=self.registry)
        self.requests = Counter("modeldeck_requests", "Finished requests by outcome",
                                ("version", "outcome"), registry=self.registry)
        # Rollouts (engine.serving.rollout): each version's share of new requests, and the
        # candidate's shadow copies: their latency and agreement with the live answer.
        self.traffic_weight = Gauge("modeldeck_traffic_weight",
                                    "Share of new requests routed to the version (0..1)",
                                    labels, registry=self.registry)
        self.shadow_requests = Counter("modeldeck_shadow_requests",
                                       "Shadow copies run on the version, by agreement with live",
                                       ("version", "agreement"), registry=self.registry)
        self.shadow_latency = Histogram("modeldeck_shadow_request_latency_seconds",
                                        "Latency of the version's shadow copies", labels,
                                        buckets=E2E_BUCKETS, registry=self.registry)
        self.shadow_overlap = Histogram("modeldeck_shadow_token_overlap",
                                        "Share of tokens equal to the live answer's, position "
                                        "by position (temperature 0 only)", labels,
                                        buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0),
                                        registry=self.registry)
        self.model_info = Info("modeldeck_model", "The version serving new requests",
                               registry=self.registry)
        self.registry.register(_MemoryCollector())
        self._gemm_threads = _GemmThreadsCollector()
        self.registry.register(self._gemm_threads)
        if self.slo is not None:
            self.registry.register(self.slo)

    def observer(self, version_ref: str) -> "VersionObserver":
        return VersionObserver(self, version_ref)

    def serving(self, version_ref: str, engine: dict[str, Any]) -> None:
        """engine: device, dtype, engine_path (fused / eager) and engine_detail (why)."""
        model, _, version = version_ref.rpartition("@")
        self.model_info.info({"model": model, "version": version, "ref": version_ref,
                              **{key: str(value) for key, value in engine.items()}})

    def watch_gemm_threads(self, version_ref: str, threads: "GemmThreads | None") -> None:
        """Export the thread count the version's CPU GEMMs run on (engine.serving.threads),
        read at scrape time, for as long as that step lives."""
        if threads is not None:
            self._gemm_threads.watched[version_ref] = threads

    def count_rejection(self, version_ref: str, outcome: str) -> None:
        self.requests.labels(version_ref, outcome).inc()
        if self.slo is not None:
            self.slo.finished(version_ref, outcome, None, 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class VersionObserver:
    """The scheduler's hooks (engine.serving.scheduler.Observer) for one version."""

    def __init__(self, metrics: ServerMetrics, version_ref: str) -> None:
        self.metrics, self.version_ref = metrics, version_ref
        self._generated = metrics.generation_tokens.labels(version_ref)
        self._prompt = metrics.prompt_tokens.labels(version_ref)
        self._ttft, self._itl = metrics.ttft.labels(version_ref), metrics.itl.labels(version_ref)
        self._e2e, self._batch = metrics.e2e.labels(version_ref), metrics.batch_size.labels(version_ref)
        self._running, self._waiting = metrics.running.labels(version_ref), metrics.waiting.labels(version_ref)
        self._kv_cache = metrics.kv_cache_usage.labels(version_ref)
        self._slo = metrics.slo

    def prompt_tokens(self, count: int) -> None:
        self._prompt.inc(count)

    def token(self, first: bool, seconds_since_previous: float) -> None:
        self._generated.inc()
        (self._ttft if first else self._itl).observe(seconds_since_previous)
        if self._slo is not None:
            self._slo.token(self.version_ref, first, seconds_since_previous)

    def finished(self, outcome: str, seconds: float, completion_tokens: int) -> None:
        self.metrics.requests.labels(self.version_ref, outcome).inc()
        if outcome in ("stop", "length"):
            self._e2e.observe(seconds)
        if self._slo is not None:
            self._slo.finished(self.version_ref, outcome, seconds, completion_tokens)

    def step(self, batch_size: int, running: int, waiting: int) -> None:
        if batch_size:
            self._batch.observe(batch_size)
        self._running.set(running)
        self._waiting.set(waiting)

    def kv_cache_usage(self, fraction: float) -> None:
        self._kv_cache.set(fraction)


class _MemoryCollector:
    """Memory in use, read at scrape time: process RSS, and CUDA memory when a GPU serves."""

    def collect(self) -> Any:
        family = GaugeMetricFamily("modeldeck_memory_used_bytes", "Memory in use",
                                   labels=("kind",))
        family.add_metric(("rss",), float(_rss_bytes()))
        cuda = _cuda_allocated()
        if cuda is not None:
            family.add_metric(("cuda",), float(cuda))
        yield family


class _GemmThreadsCollector:
    """Each serving version's GEMM thread count and how often the measuring changed it: a count
    below the cores means another process (or this server's own HTTP work) was found to slow
    the multi-threaded GEMMs down. A version's series go when its step is freed."""

    def __init__(self) -> None:
        self.watched: "weakref.WeakValueDictionary[str, GemmThreads]" = (
            weakref.WeakValueDictionary())

    def collect(self) -> Any:
        threads = GaugeMetricFamily("modeldeck_gemm_threads",
                                    "Threads the version's CPU GEMMs run on, measured while "
                                    "serving", labels=("version",))
        switches = CounterMetricFamily("modeldeck_gemm_thread_switches",
                                       "Times the measuring changed that count",
                                       labels=("version",))
        for version_ref, watched in list(self.watched.items()):
            threads.add_metric((version_ref,), float(watched.chosen))
            switches.add_metric((version_ref,), float(watched.switches))
        yield threads
        yield switches


def _rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss
    except Exception:  # psutil missing or the platform refuses: report nothing rather than fail
        return 0


def _cuda_allocated() -> int | None:
    import sys

    torch = sys.modules.get("torch")  # never import torch just to be scraped
    if torch is None or not torch.cuda.is_available():
        return None
    return int(torch.cuda.memory_allocated())
