"""Telemetry: the box's GPUs (NVML) and host (psutil), remote serving endpoints, and the fleet
through Prometheus, published as immutable snapshots (see snapshots.py for their shape).

Importing this package is cheap (dataclasses only); sources import their libraries when built.

- `Sampler` (sampler.py): background threads, ring-buffer history, `latest()` snapshot.
- `build_sampler(deck)`: a sampler wired from deck.toml (NVML, psutil, `[[endpoints]]`).
- `gpu_snapshot()`, `host_snapshot()`, `endpoint_snapshots(deck)`, `fleet_snapshot(deck)`:
  one-shot reads for callers
  without a sampler (the console's adapters); endpoint rates appear from the second call on.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from engine.snapshots import (EndpointSnapshot, FleetSeries, FleetSnapshot, GpuDevice,
                                        GpuProcess, GpuSnapshot, HostSnapshot, ModelStats,
                                        TelemetrySnapshot)

if TYPE_CHECKING:
    from engine.deck import Deck
    from engine.telemetry.sampler import Sampler

__all__ = ["EndpointSnapshot", "FleetSeries", "FleetSnapshot", "GpuDevice", "GpuProcess",
           "GpuSnapshot", "HostSnapshot", "ModelStats", "TelemetrySnapshot", "build_sampler",
           "endpoint_snapshots", "fleet_snapshot", "gpu_snapshot", "host_snapshot"]

_shared_lock = threading.Lock()
_shared: dict[str, Any] = {}


def build_sampler(deck: "Deck", gpu_source: Any = None, interval_s: float | None = None,
                  with_endpoints: bool = True) -> "Sampler":
    """A sampler for this deck: NVML unless a source is given (tests pass a ReplaySource)."""
    from engine.telemetry.gpu import NvmlSource
    from engine.telemetry.host import HostSource
    from engine.telemetry.sampler import Sampler

    settings = deck.config.telemetry
    poller, fleet = None, None
    if with_endpoints and deck.config.endpoints:
        from engine.remote.poller import EndpointPoller

        poller = EndpointPoller(deck.config.endpoints, settings.history_points)
    if with_endpoints and deck.config.prometheus.url:
        from engine.telemetry.prometheus import FleetClient

        fleet = FleetClient(deck.config.prometheus)
    return Sampler(gpu_source or NvmlSource(), HostSource(), poller,
                   interval_s or settings.interval_s, settings.history_points, fleet=fleet)


def gpu_snapshot() -> GpuSnapshot:
    from engine.telemetry.gpu import NvmlSource

    return _shared_instance("nvml", NvmlSource).read()


def host_snapshot() -> HostSnapshot:
    from engine.telemetry.host import HostSource

    return _shared_instance("host", HostSource).read()


def endpoint_snapshots(deck: "Deck") -> tuple[EndpointSnapshot, ...]:
    """Poll this deck's endpoints once; the poller is kept per endpoint list, so a second call
    has a previous scrape to compute rates and percentiles from."""
    from engine.remote.poller import EndpointPoller

    endpoints = deck.config.endpoints
    if not endpoints:
        return ()
    poller = _shared_instance(f"poller:{hash(endpoints)}", lambda: EndpointPoller(endpoints))
    with _shared_lock:  # one event loop per poller: never two polls on it at once
        return poller.poll_blocking()


def fleet_snapshot(deck: "Deck") -> FleetSnapshot:
    """The fleet's GPUs and serving rates from [prometheus] (status `off` when not configured)."""
    from engine.telemetry.prometheus import FleetClient

    settings = deck.config.prometheus
    return _shared_instance(f"fleet:{hash(settings)}", lambda: FleetClient(settings)).snapshot()


def _shared_instance(key: str, build: Any) -> Any:
    with _shared_lock:
        if key not in _shared:
            _shared[key] = build()
        return _shared[key]
