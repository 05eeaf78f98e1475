"""Telemetry verbs: watch, endpoints list|check."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.errors import BadInput


@dataclass(frozen=True)
class EndpointInfo:
    """An endpoint as configured. Where its API key comes from is shown, never the key."""

    name: str
    kind: str
    url: str
    model: str | None
    verify_tls: bool
    timeout_s: float
    api_key_env: str | None
    api_key_file: str | None
    secret_configured: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_endpoints(deck: Deck) -> list[EndpointInfo]:
    return [EndpointInfo(e.name, e.kind, e.url, e.model, e.verify_tls, e.timeout_s, e.api_key_env,
                         str(e.api_key_file) if e.api_key_file else None, e.secret_configured)
            for e in deck.config.endpoints]


@dataclass(frozen=True)
class CheckEndpointsRequest:
    names: tuple[str, ...] = ()  # empty: every configured endpoint
    window_s: float = 0.0  # > 0: scrape twice this far apart, for rates and percentiles


@dataclass(frozen=True)
class EndpointsCheck:
    endpoints: tuple[Any, ...]  # engine.telemetry.EndpointSnapshot
    models: tuple[Any, ...]  # engine.telemetry.ModelStats

    @property
    def all_reachable(self) -> bool:
        return all(endpoint.status != "down" for endpoint in self.endpoints)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoints": [e.to_dict() for e in self.endpoints],
                "models": [m.to_dict() for m in self.models]}


def check_endpoints(deck: Deck, request: CheckEndpointsRequest) -> EndpointsCheck:
    """Probe and scrape endpoints concurrently; down ones are data in the result."""
    from engine.remote.poller import EndpointPoller

    configured = {e.name: e for e in deck.config.endpoints}
    unknown = [name for name in request.names if name not in configured]
    if unknown:
        raise BadInput(f"no endpoint named {unknown[0]!r} in deck.toml")
    if not 0 <= request.window_s <= 300:
        raise BadInput("--window must be between 0 and 300 seconds")
    chosen = [configured[name] for name in request.names] or list(configured.values())
    poller = EndpointPoller(chosen)
    try:
        snapshots = poller.poll_blocking()
        if request.window_s > 0 and chosen:  # nothing to measure: no reason to wait
            time.sleep(request.window_s)
            snapshots = poller.poll_blocking()
        return EndpointsCheck(snapshots, poller.models())
    finally:
        poller.close()


@dataclass(frozen=True)
class WatchRequest:
    interval_s: float | None = None  # None: [telemetry] interval_s
    count: int | None = None  # None: until interrupted
    gpu_replay: Path | None = None  # recorded NVML readings instead of NVML (tests, demos)
    remote: bool = True  # endpoints and Prometheus; False: this box only


def watch(deck: Deck, request: WatchRequest) -> Any:
    """Yield one TelemetrySnapshot per interval (a generator; stop by closing it)."""
    from engine.telemetry import build_sampler
    from engine.telemetry.gpu import ReplaySource

    if request.interval_s is not None and not 0.05 <= request.interval_s <= 3600:
        raise BadInput("--interval must be between 0.05 and 3600 seconds")
    if request.count is not None and request.count < 1:
        raise BadInput("--count must be at least 1")
    replay = None
    if request.gpu_replay is not None:
        try:
            replay = ReplaySource.from_file(request.gpu_replay)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise BadInput(f"cannot replay GPU readings from {request.gpu_replay}: {error}") from None
    return _watch_ticks(build_sampler(deck, replay, request.interval_s, request.remote),
                        request.count)


def _watch_ticks(sampler: Any, count: int | None) -> Any:
    with sampler:
        deadline = time.monotonic()
        number = 0
        while count is None or number < count:
            if number:
                deadline += sampler.interval_s
                time.sleep(max(0.0, deadline - time.monotonic()))
            yield sampler.tick()
            number += 1
