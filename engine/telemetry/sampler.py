"""The background sampler: one source of truth for the console's live panes and `modeldeck watch`.

Two daemon threads, so a slow endpoint never delays the GPU readings:
- `local`: GPUs and host every interval;
- `remote` (only when endpoints or Prometheus are configured): one concurrent endpoint poll and
  one fleet query every interval. The first fleet query also fills the fleet GPUs' history from
  a Prometheus range query, so charts have a past on their first paint.
Each tick builds a new immutable TelemetrySnapshot and swaps it in under a lock; `latest()` is
a lock-protected reference read (plus a staleness check), cheap enough for every repaint.
History: a ring buffer (deque with maxlen) per series, e.g. `gpu.0.utilization_pct`,
`host.cpu_pct`, `endpoint.<name>.tokens_per_s`, `fleet.<host>.<gpu>.utilization_pct`;
`history(series)` copies one out.

Endpoint rates and latency percentiles are over a sliding window of `rate_window_s` (10 s), not
the last poll: a server that finishes a batch every few seconds reads as its steady rate instead
of flickering between a burst and zero. The window is the difference between the newest scrape
and the newest one at least `rate_window_s` older (counters and histogram buckets are cumulative,
so that is exact, and a restart inside the window is handled as derive.window handles it).
Each endpoint's `tokens_history` is this windowed rate, one point per poll, zero kept as zero.

`endpoints`, when given, is asked for the endpoint list on every remote tick (build_sampler
passes deck.toml's `[[endpoints]]` plus the local server while it runs); the poller is rebuilt
when the list changes, and the histories, kept by endpoint name, carry over.

This module imports no torch and no textual (a test checks it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.snapshots import (EndpointSnapshot, GpuDevice, GpuSnapshot, HostSnapshot,
                              ModelStats, TelemetrySnapshot, VersionStats)
from engine.telemetry.diagnosis import diagnose_endpoint, diagnose_gpu

if TYPE_CHECKING:
    from engine.config import EndpointSettings
    from engine.remote.derive import Window
    from engine.slo_settings import SloSettings
    from engine.remote.metrics import Scrape
    from engine.remote.poller import EndpointPoller
    from engine.telemetry.gpu import GpuSource
    from engine.telemetry.host import HostSource
    from engine.telemetry.prometheus import FleetClient

GPU_SERIES = ("utilization_pct", "memory_used_bytes", "temperature_c", "power_w")
HOST_SERIES = ("cpu_pct", "memory_pct", "net_rx_bytes_per_s", "net_tx_bytes_per_s")
ENDPOINT_SERIES = ("tokens_per_s", "requests_per_s", "ttft_p95_s", "e2e_p95_s")
RATE_WINDOW_S = 10.0


class Sampler:
    def __init__(self, gpu_source: "GpuSource | None" = None, host_source: "HostSource | None" = None,
                 poller: "EndpointPoller | None" = None, interval_s: float = 1.0,
                 history_points: int = 600, stale_after_s: float | None = None,
                 fleet: "FleetClient | None" = None,
                 endpoints: "Callable[[], Sequence[EndpointSettings]] | None" = None,
                 rate_window_s: float = RATE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 slo: "SloSettings | None" = None) -> None:
        self.gpu_source, self.host_source, self.poller = gpu_source, host_source, poller
        self.fleet = fleet
        self.endpoints = endpoints
        self._endpoints_key: tuple | None = None
        self.rate_window_s = rate_window_s
        self.slo = slo if slo is not None and slo.any_configured else None  # deck.toml [slo]
        self._windows: dict[str, "Window"] = {}  # each endpoint's last window (model merges)
        self.clock = clock  # stamps each scrape the window uses (tests step it by hand)
        self._scrapes: dict[str, deque[tuple[float, "Scrape"]]] = {}
        self._fleet_history_loaded = False
        self.interval_s = interval_s
        self.history_points = history_points
        self._stale_given = stale_after_s
        self.stale_after_s = stale_after_s or 3 * interval_s + _longest_timeout(poller)
        self._lock = threading.Lock()
        self._history: dict[str, deque] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sequence = 0
        self._latest = TelemetrySnapshot(
            time.time(), GpuSnapshot("pending", "not sampled yet") if gpu_source
            else GpuSnapshot("no-nvml", "GPU sampling is off"),
            host=None, endpoints=poller.latest if poller else (), interval_s=interval_s)

    # ---- reading ------------------------------------------------------------------------------

    def latest(self, now: float | None = None) -> TelemetrySnapshot:
        """The newest snapshot; endpoints whose last poll is older than `stale_after_s` (at
        `now`, default the current time) come back `stale`."""
        with self._lock:
            snapshot = self._latest
        now = time.time() if now is None else now
        if not any(_too_old(endpoint, now, self.stale_after_s) for endpoint in snapshot.endpoints):
            return snapshot
        endpoints = tuple(endpoint.as_stale(f"last poll {now - (endpoint.checked_at or now):.0f} s ago")
                          if _too_old(endpoint, now, self.stale_after_s) else endpoint
                          for endpoint in snapshot.endpoints)
        return replace(snapshot, endpoints=endpoints)

    def history(self, series: str) -> tuple[float, ...]:
        with self._lock:
            buffer = self._history.get(series)
            return tuple(buffer) if buffer is not None else ()

    def series_names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._history))

    # ---- sampling -----------------------------------------------------------------------------

    def tick(self) -> TelemetrySnapshot:
        """One synchronous round of everything (what `modeldeck watch` calls)."""
        self.sample_local()
        if self._has_remote:
            self.sample_remote()
        return self.latest()

    @property
    def _has_remote(self) -> bool:
        return self.poller is not None or self.fleet is not None or self.endpoints is not None

    def sample_local(self) -> None:
        gpus = _read_gpus(self.gpu_source)
        host = _read_host(self.host_source)
        with self._lock:
            gpus = self._record_gpus(gpus)
            host = self._record_host(host) if host is not None else None
            self._sequence += 1
            self._latest = replace(self._latest, taken_at=time.time(), gpus=gpus, host=host,
                                   sequence=self._sequence)

    def sample_remote(self) -> None:
        """Endpoints and fleet (network: called from its own thread, or from tick())."""
        poller = self._current_poller()
        if poller is not None:
            polled = poller.poll_blocking()
            models = poller.models()
            scrapes = _last_scrapes(poller)
            now = self.clock()
            with self._lock:
                endpoints = tuple(self._record_endpoint(endpoint, scrapes.get(endpoint.name), now)
                                  for endpoint in polled)
                models = _models_slo(models, endpoints, self._windows, self.slo)
                self._latest = replace(self._latest, taken_at=time.time(), endpoints=endpoints,
                                       models=models)
        elif self.endpoints is not None and self._latest.endpoints:
            with self._lock:  # the last endpoint went away (the local server stopped)
                self._latest = replace(self._latest, taken_at=time.time(), endpoints=(), models=())
        if self.fleet is not None:
            self._sample_fleet(self.fleet)

    def _current_poller(self) -> "EndpointPoller | None":
        """The poller for the endpoints as they are now (rebuilt when the list changed)."""
        if self.endpoints is None:
            return self.poller
        wanted = list(self.endpoints())
        key = tuple(endpoint.model_dump_json() for endpoint in wanted)
        if key != self._endpoints_key:
            from engine.remote.poller import EndpointPoller

            if self.poller is not None:
                self.poller.close()
            self.poller = EndpointPoller(wanted, self.history_points) if wanted else None
            self._endpoints_key = key
            if self._stale_given is None:
                self.stale_after_s = 3 * self.interval_s + _longest_timeout(self.poller)
        return self.poller

    def _record_endpoint(self, endpoint: EndpointSnapshot, scrape: "Scrape | None",
                         now: float) -> EndpointSnapshot:
        """The endpoint's rates and percentiles over the window; its histories appended."""
        endpoint = self._windowed(endpoint, scrape, now)
        for series in ENDPOINT_SERIES:
            self._append(f"endpoint.{endpoint.name}.{series}", getattr(endpoint, series))
        diagnosis = diagnose_endpoint(endpoint, _batch_capacity(scrape))
        return replace(endpoint, diagnosis=diagnosis, tokens_history=tuple(
            self._history.get(f"endpoint.{endpoint.name}.tokens_per_s", ())))

    def _windowed(self, endpoint: EndpointSnapshot, scrape: "Scrape | None",
                  now: float) -> EndpointSnapshot:
        kept = self._scrapes.setdefault(endpoint.name, deque())
        self._windows.pop(endpoint.name, None)
        if endpoint.status not in ("up", "degraded") or scrape is None:
            kept.clear()  # down: counting starts again when it is back
            return endpoint
        if not kept or kept[-1][1] is not scrape:
            kept.append((now, scrape))
        while len(kept) > 2 and kept[1][0] <= now - self.rate_window_s:
            kept.popleft()  # keep one scrape at or before the window's start as its base
        if len(kept) < 2:
            return endpoint
        override = _slo_override(self.poller, endpoint.name)
        return _with_window(endpoint, kept[0], kept[-1], self.slo, override, self._windows)

    def _sample_fleet(self, fleet: "FleetClient") -> None:
        if not self._fleet_history_loaded:
            past = fleet.gpu_utilization_history()
            self._fleet_history_loaded = bool(past)
            with self._lock:
                for series in past:
                    labels = series.label_dict
                    host = labels.get("Hostname") or labels.get("instance") or "?"
                    for _, value in series.points:
                        self._append(f"fleet.{host}.{labels.get('gpu', '0')}.utilization_pct", value)
        snapshot = fleet.snapshot()
        with self._lock:
            devices = []
            for device in snapshot.gpus:
                key = f"fleet.{device.host}.{device.index}.utilization_pct"
                self._append(key, device.utilization_pct)
                devices.append(replace(device, diagnosis=diagnose_gpu(device),
                                       utilization_history=tuple(self._history.get(key, ()))))
            self._latest = replace(self._latest, taken_at=time.time(),
                                   fleet=replace(snapshot, gpus=tuple(devices)))

    def _record_gpus(self, gpus: GpuSnapshot) -> GpuSnapshot:
        devices: list[GpuDevice] = []
        for device in gpus.devices:
            prefix = f"gpu.{device.index}"
            for series in GPU_SERIES:
                self._append(f"{prefix}.{series}", getattr(device, series))
            devices.append(replace(device, diagnosis=diagnose_gpu(device), utilization_history=tuple(
                self._history.get(f"{prefix}.utilization_pct", ()))))
        return replace(gpus, devices=tuple(devices))

    def _record_host(self, host: HostSnapshot) -> HostSnapshot:
        for series in HOST_SERIES:
            self._append(f"host.{series}", getattr(host, series))
        return replace(host, cpu_history=tuple(self._history.get("host.cpu_pct", ())))

    def _append(self, series: str, value: Any) -> None:
        if value is None:
            return  # unknown stays out of the history rather than drawn as zero
        buffer = self._history.get(series)
        if buffer is None:
            buffer = self._history[series] = deque(maxlen=self.history_points)
        buffer.append(value)

    # ---- threads ------------------------------------------------------------------------------

    def start(self) -> "Sampler":
        if self._threads:
            return self
        self._stop.clear()
        self._threads = [threading.Thread(target=self._every_interval, args=(self.sample_local,),
                                          name="modeldeck-sampler-local", daemon=True)]
        if self._has_remote:
            self._threads.append(threading.Thread(
                target=self._every_interval, args=(self.sample_remote,),
                name="modeldeck-sampler-remote", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _every_interval(self, sample: Any) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                sample()
            except Exception as error:  # a thread must outlive one bad tick; shown as data
                self._publish_failure(sample, error)
            deadline += self.interval_s
            now = time.monotonic()
            if deadline < now:  # fell behind (suspended, overloaded): no catch-up burst
                deadline = now + self.interval_s
            self._stop.wait(deadline - now)

    def _publish_failure(self, sample: Any, error: Exception) -> None:
        if sample == self.sample_local:
            with self._lock:
                self._latest = replace(self._latest, gpus=GpuSnapshot(
                    "error", f"sampling failed: {type(error).__name__}: {error}"[:200]))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.interval_s + 5)
        self._threads = []

    def close(self) -> None:
        self.stop()
        for source in (self.gpu_source, self.host_source, self.poller):
            if source is not None:
                source.close()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _read_gpus(source: "GpuSource | None") -> GpuSnapshot:
    if source is None:
        return GpuSnapshot("no-nvml", "GPU sampling is off")
    return source.read()


def _read_host(source: "HostSource | None") -> HostSnapshot | None:
    return source.read() if source is not None else None


def _batch_capacity(scrape: "Scrape | None") -> int | None:
    """The server's batch limit, where its /metrics says (engine.telemetry.diagnosis)."""
    from engine.remote.metrics import GAUGES_SUMMED

    capacity = scrape.gauge(GAUGES_SUMMED["batch_capacity"]) if scrape is not None else None
    return int(capacity) if capacity else None


def _too_old(endpoint: EndpointSnapshot, now: float, limit: float) -> bool:
    return (endpoint.status != "stale" and endpoint.checked_at is not None
            and now - endpoint.checked_at > limit)


def _last_scrapes(poller: "EndpointPoller") -> dict[str, "Scrape"]:
    """Each endpoint's newest parsed /metrics (the poller keeps it for its per-poll rates)."""
    states = getattr(poller, "_states", ())
    return {state.settings.name: state.last_scrape for state in states
            if getattr(state, "last_scrape", None) is not None}


def _with_window(endpoint: EndpointSnapshot, base: tuple[float, "Scrape"],
                 newest: tuple[float, "Scrape"], slo: "SloSettings | None" = None,
                 override: Any = None, windows: dict[str, "Window"] | None = None,
                 ) -> EndpointSnapshot:
    """Rates, percentiles and [slo] attainment between two scrapes, stamped with the sampler's
    clock (the window is also kept in `windows`, by endpoint name, for the model merge)."""
    from engine.remote.derive import percentiles, version_windows, window, windowed_slo

    before, after = replace(base[1], at=base[0]), replace(newest[1], at=newest[0])
    measured = window(before, after)
    if windows is not None:
        windows[endpoint.name] = measured
    fields: dict[str, Any] = {"tokens_per_s": measured.tokens_per_s,
                              "prompt_tokens_per_s": measured.prompt_tokens_per_s,
                              "requests_per_s": measured.requests_per_s}
    for logical in ("ttft", "itl", "e2e"):
        p50, p95, p99 = percentiles(measured.latency_deltas.get(logical))
        fields.update({f"{logical}_p50_s": p50, f"{logical}_p95_s": p95, f"{logical}_p99_s": p99})
    parts = version_windows(before, after)
    per_version: dict[str, Any] = {}
    if slo is not None:
        fields["slo"], per_version = windowed_slo(measured, parts, slo, endpoint.model, override)
    return replace(endpoint, versions=_version_stats(parts, per_version), **fields)


def _version_stats(parts: Sequence[Any], slo: dict[str, Any]) -> tuple[VersionStats, ...]:
    from engine.remote.derive import quantile

    return tuple(VersionStats(part.version, part.measured.tokens_per_s,
                              part.measured.requests_per_s,
                              quantile(0.95, part.measured.latency_deltas.get("ttft")),
                              quantile(0.95, part.measured.latency_deltas.get("itl")),
                              part.requests, part.failed, slo.get(part.version))
                 for part in parts)


def _slo_override(poller: "EndpointPoller | None", name: str) -> Any:
    """The endpoint's own deck.toml `slo` table, if any."""
    for state in getattr(poller, "_states", ()):
        if state.settings.name == name:
            return getattr(state.settings, "slo", None)
    return None


def _models_slo(models: Sequence[ModelStats], endpoints: Sequence[EndpointSnapshot],
                windows: dict[str, "Window"], slo: "SloSettings | None") -> tuple[ModelStats, ...]:
    """Each model's attainment from its replicas' windows merged (buckets summed)."""
    if slo is None:
        return tuple(models)
    from engine.remote.derive import merge_windows, slo_stats

    merged = []
    for stats in models:
        members = [windows[endpoint.name] for endpoint in endpoints
                   if (endpoint.model or endpoint.name) == stats.model and endpoint.name in windows]
        bounds = slo.resolve(stats.model)
        merged.append(replace(stats, slo=slo_stats(merge_windows(members), bounds, None, None))
                      if members and bounds is not None else stats)
    return tuple(merged)


def _longest_timeout(poller: "EndpointPoller | None") -> float:
    return 2 * poller.longest_timeout_s if poller is not None else 0.0  # a poll: two requests
