"""Telemetry: the box's GPUs (NVML) and host (psutil), remote serving endpoints, and the fleet
through Prometheus, published as immutable snapshots (see snapshots.py for their shape).

Importing this package is cheap (dataclasses only); sources import their libraries when built.

- `Sampler` (sampler.py): background threads, ring-buffer history, `latest()` snapshot.
- `build_sampler(deck)`: a sampler wired from deck.toml (NVML, psutil, `[[endpoints]]`) plus the
  deck's local server as the endpoint `local` while it runs (the console and `watch` agree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.snapshots import (EndpointSnapshot, FleetSeries, FleetSnapshot, GpuDevice,
                                        GpuProcess, GpuSnapshot, HostSnapshot, ModelStats,
                                        TelemetrySnapshot)

if TYPE_CHECKING:
    from engine.deck import Deck
    from engine.telemetry.sampler import Sampler

__all__ = ["EndpointSnapshot", "FleetSeries", "FleetSnapshot", "GpuDevice", "GpuProcess",
           "GpuSnapshot", "HostSnapshot", "ModelStats", "TelemetrySnapshot", "build_sampler",
           "deck_endpoints", "local_endpoint"]



def build_sampler(deck: "Deck", gpu_source: Any = None, interval_s: float | None = None,
                  with_endpoints: bool = True) -> "Sampler":
    """A sampler for this deck: NVML unless a source is given (tests pass a ReplaySource)."""
    from engine.telemetry.gpu import NvmlSource
    from engine.telemetry.host import HostSource
    from engine.telemetry.sampler import Sampler

    settings = deck.config.telemetry
    fleet = None
    if with_endpoints and deck.config.prometheus.url:
        from engine.telemetry.prometheus import FleetClient

        fleet = FleetClient(deck.config.prometheus)
    return Sampler(gpu_source or NvmlSource(), HostSource(), None,
                   interval_s or settings.interval_s, settings.history_points, fleet=fleet,
                   endpoints=(lambda: deck_endpoints(deck)) if with_endpoints else None,
                   slo=deck.config.slo)


LOCAL_ENDPOINT = "local"  # the deck's own server, as the console and `watch` name it


def deck_endpoints(deck: "Deck") -> list[Any]:
    """deck.toml's [[endpoints]], the local server first while it runs (read from run/server.json
    on each call: it starts and stops while a sampler lives)."""
    endpoints = list(deck.config.endpoints)
    local = local_endpoint(deck)
    if local is not None and all(endpoint.name != LOCAL_ENDPOINT for endpoint in endpoints):
        endpoints.insert(0, local)
    return endpoints


def local_endpoint(deck: "Deck") -> Any:
    """The running local server as endpoint settings (its API key from [serve]), else None."""
    from engine.config import EndpointSettings
    from engine.runstate import running_server  # light: no torch

    info = running_server(deck.paths)
    if info is None:
        return None
    serve = deck.config.serve
    return EndpointSettings(name=LOCAL_ENDPOINT, kind="modeldeck", url=info.url,
                            api_key_env=serve.api_key_env, api_key_file=serve.api_key_file)
