"""The published shape of telemetry: immutable snapshots the console and `modeldeck watch` render.
It sits below engine.telemetry (the sampler) and engine.remote (the endpoint poller), which both
build these; neither imports the other for them.

Every snapshot is a frozen dataclass of scalars and tuples, safe to hand between threads. A value
a source cannot report is None (JSON null), never an error. Units are in the field names:
`_pct` is 0..100, `_bytes`, `_w` (watts), `_c` (Celsius), `_mhz`, `_s` (seconds), `_per_s`.
`to_dict()` gives plain JSON-ready dicts (tuples become lists).

Status vocabularies:
- GpuSnapshot.status: `ok`, `no-nvml` (library or driver missing), `no-gpu` (NVML works, zero
  devices), `error` (NVML failed at runtime), `pending` (a sampler before its first tick);
  `reason` says why in words.
- EndpointSnapshot.status: `up`, `degraded` (answers but something is wrong: health failing,
  /metrics missing or malformed), `down` (reason: refused, timeout, http <code>, tls, dns, error),
  `stale` (no fresh result: not polled yet, or the last poll is older than the stale limit).
- FleetSnapshot.status: `ok`, `down` (Prometheus unreachable or failing, with the reason), `off`.
"""

from __future__ import annotations

import types
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

GpuStatus = Literal["ok", "no-nvml", "no-gpu", "error", "pending"]
EndpointStatus = Literal["up", "degraded", "down", "stale"]
FleetStatus = Literal["ok", "down", "off"]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _from_plain(hint: Any, value: Any) -> Any:
    """`value` (as to_dict wrote it) back into the type `hint` names: nested snapshots become
    their classes again, lists tuples; scalars pass through."""
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = [arm for arm in get_args(hint) if arm is not type(None)]
        return _from_plain(arms[0], value) if len(arms) == 1 else value
    if isinstance(hint, type) and is_dataclass(hint) and isinstance(value, dict):
        return hint.from_dict(value)  # type: ignore[attr-defined]
    if origin is tuple and isinstance(value, (list, tuple)):
        arguments = get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_from_plain(arguments[0], item) for item in value)
        return tuple(_from_plain(argument, item) for argument, item in zip(arguments, value))
    return value


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    if cls not in _FIELD_TYPES:  # get_type_hints resolves the string annotations: once a class
        hints = get_type_hints(cls)
        _FIELD_TYPES[cls] = {item.name: hints[item.name] for item in fields(cls)}
    return _FIELD_TYPES[cls]


class _ToDict:
    def to_dict(self: DataclassInstance) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """The inverse of to_dict, for every snapshot class at once (a recording written by this
        build or an older one: fields this build does not know are left out)."""
        types_by_name = _field_types(cls)
        return cls(**{name: _from_plain(types_by_name[name], value)
                      for name, value in data.items() if name in types_by_name})


@dataclass(frozen=True)
class Diagnosis(_ToDict):
    """One line saying what limits or troubles an endpoint or a GPU now, from the pure rules
    of engine.telemetry.diagnosis; `rules` names the rules that matched (`ok` when none)."""

    line: str
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuProcess(_ToDict):
    """A process holding memory on a GPU. `name` is the executable's base name."""

    pid: int
    name: str | None = None
    user: str | None = None
    command: str | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class GpuDevice(_ToDict):
    """One GPU. `host` is None for this box and the host name for fleet GPUs (Prometheus)."""

    index: int
    name: str | None = None
    uuid: str | None = None
    utilization_pct: float | None = None
    memory_utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    utilization_history: tuple[float, ...] = ()  # oldest first, filled in by the sampler
    host: str | None = None
    # NVML's clock event (throttle) reasons now, e.g. ("sw_power_cap",); None: not reported
    throttle_reasons: tuple[str, ...] | None = None
    # XID errors (NVML's critical-error events) seen since this reader started, and the last
    # one's code; None: this reader cannot see them (no NVML events, a replay, DCGM's count)
    xid_errors: int | None = None
    last_xid: int | None = None
    diagnosis: Diagnosis | None = None  # filled in by the sampler


@dataclass(frozen=True)
class GpuSnapshot(_ToDict):
    status: GpuStatus
    reason: str | None = None
    devices: tuple[GpuDevice, ...] = ()
    driver_version: str | None = None
    source: str = "nvml"  # nvml | replay | prometheus
    taken_at: float | None = None  # time.time()

    @property
    def gpus(self) -> tuple[GpuDevice, ...]:
        return self.devices


@dataclass(frozen=True)
class HostSnapshot(_ToDict):
    """The host through psutil. Rates are None on the first sample (they need two)."""

    cpu_count: int
    cpu_pct: float | None = None
    cpu_per_core_pct: tuple[float, ...] = ()
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_pct: float | None = None
    swap_used_bytes: int | None = None
    load_1m: float | None = None
    load_5m: float | None = None
    load_15m: float | None = None
    disk_read_bytes_per_s: float | None = None
    disk_write_bytes_per_s: float | None = None
    net_rx_bytes_per_s: float | None = None
    net_tx_bytes_per_s: float | None = None
    cpu_history: tuple[float, ...] = ()
    taken_at: float | None = None


@dataclass(frozen=True)
class SloStats(_ToDict):
    """Attainment of deck.toml's [slo] over the window: per latency bound the share (0..1) of
    requests within it (None: bound not set or no requests), the observed error rate and
    whether it is within its bound, `joint` the share that met every bound, and goodput: the
    rates times `joint` (engine.remote.derive.slo_stats says how it is approximated)."""

    ttft: float | None = None
    itl: float | None = None
    e2e: float | None = None
    error_rate: float | None = None
    error_rate_met: bool | None = None
    joint: float | None = None
    goodput_requests_per_s: float | None = None
    goodput_tokens_per_s: float | None = None
    # the bounds these shares are against, as resolved for this endpoint, model or version
    ttft_bound_s: float | None = None
    itl_bound_s: float | None = None
    e2e_bound_s: float | None = None
    error_rate_bound: float | None = None
    target: float | None = None  # the share that must meet every bound ([slo] target)


@dataclass(frozen=True)
class VersionStats(_ToDict):
    """One version served by an endpoint, over the same window as the endpoint's rates (a
    modeldeck server labels every series with `version`: two serve side by side during a
    deploy or a rollout). requests / failed: finished in the window / of which failed."""

    version: str
    tokens_per_s: float | None = None
    requests_per_s: float | None = None
    ttft_p95_s: float | None = None
    itl_p95_s: float | None = None
    requests: float | None = None
    failed: float | None = None
    slo: SloStats | None = None  # None: no [slo] in deck.toml


@dataclass(frozen=True)
class LoadedModel(_ToDict):
    """A model an engine holds in memory now (Ollama's /api/ps): its size, how much of it is
    in GPU memory, and when the engine will unload it (ISO time, as the engine says it)."""

    name: str
    size_bytes: int | None = None
    vram_bytes: int | None = None
    expires_at: str | None = None


@dataclass(frozen=True)
class EndpointSnapshot(_ToDict):
    """One remote serving endpoint after a poll. Rates and percentiles need two scrapes and a
    change in between: they are None until then. The API key is never part of a snapshot."""

    name: str
    kind: str
    url: str
    status: EndpointStatus
    reason: str | None = None
    model: str | None = None  # replicas of one model share this (deck.toml `model`, else name)
    http_status: int | None = None
    probe_latency_s: float | None = None
    checked_at: float | None = None  # time.time() of the poll that made this snapshot
    last_up_at: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    requests_per_s: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_pct: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p95_s: float | None = None
    itl_p99_s: float | None = None
    e2e_p50_s: float | None = None
    e2e_p95_s: float | None = None
    e2e_p99_s: float | None = None
    tokens_history: tuple[float, ...] = ()
    versions: tuple[VersionStats, ...] = ()  # per `version` label, when the series carry one
    slo: SloStats | None = None  # None: no [slo] in deck.toml
    # False where the engine publishes no serving counters (Ollama: no /metrics): the rates
    # above are unknown, not zero, and `reason` says so.
    throughput_observable: bool = True
    loaded_models: tuple[LoadedModel, ...] = ()  # what the engine reports loaded (Ollama)
    diagnosis: Diagnosis | None = None  # filled in by the sampler

    def as_stale(self, reason: str) -> "EndpointSnapshot":
        return replace(self, status="stale", reason=reason,
                       diagnosis=Diagnosis(f"not checked: {reason}", ("stale",)))


@dataclass(frozen=True)
class ModelStats(_ToDict):
    """Replicas of one model merged: rates summed, percentiles from summed bucket deltas."""

    model: str
    replicas: int
    replicas_up: int
    tokens_per_s: float | None = None
    requests_per_s: float | None = None
    running: float | None = None
    waiting: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p95_s: float | None = None
    itl_p99_s: float | None = None
    e2e_p50_s: float | None = None
    e2e_p95_s: float | None = None
    e2e_p99_s: float | None = None
    slo: SloStats | None = None  # over the sampler's window, against the model's bounds


@dataclass(frozen=True)
class FleetSeries(_ToDict):
    """One time series: its labels and (unix time, value) points, oldest first."""

    labels: tuple[tuple[str, str], ...]
    points: tuple[tuple[float, float], ...]

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class FleetSnapshot(_ToDict):
    status: FleetStatus
    reason: str | None = None
    gpus: tuple[GpuDevice, ...] = ()  # GpuDevice.host names the machine
    serving: tuple[FleetSeries, ...] = ()  # tokens/s now, one point per series
    taken_at: float | None = None


@dataclass(frozen=True)
class TelemetrySnapshot(_ToDict):
    """Everything the sampler knows at one instant; what `modeldeck watch --json` prints."""

    taken_at: float
    gpus: GpuSnapshot
    host: HostSnapshot | None = None
    endpoints: tuple[EndpointSnapshot, ...] = ()
    models: tuple[ModelStats, ...] = ()
    fleet: FleetSnapshot | None = None  # None: no [prometheus] url configured
    interval_s: float | None = None
    sequence: int = 0  # ticks since the sampler started
