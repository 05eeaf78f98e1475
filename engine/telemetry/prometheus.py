"""The fleet through Prometheus: other machines' GPUs (NVIDIA DCGM exporter series) and serving
series, now and as history for the first paint (range queries), via prometheus-api-client.

A Prometheus that is not configured, unreachable or answering errors is a status in the result
(`off`, `down` with the reason), never an exception. DCGM reports framebuffer memory in MiB and
labels each GPU with `gpu` (index), `UUID`, `modelName` and `Hostname` (else `instance`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from engine.snapshots import FleetSeries, FleetSnapshot, GpuDevice

if TYPE_CHECKING:
    from engine.config import PrometheusSettings

MIB = 1024 * 1024
DCGM_FIELDS = {  # DCGM series -> GpuDevice field (and a scale)
    "DCGM_FI_DEV_GPU_UTIL": ("utilization_pct", 1.0),
    "DCGM_FI_DEV_FB_USED": ("memory_used_bytes", MIB),
    "DCGM_FI_DEV_FB_FREE": ("memory_free_bytes", MIB),
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_c", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1.0),
    "DCGM_FI_DEV_MEM_CLOCK": ("memory_clock_mhz", 1.0),
    "DCGM_FI_DEV_XID_ERRORS": ("last_xid", 1.0),  # DCGM reports the last XID's code, not a count
}
# Generated tokens/s per serving job, whichever engine's name is present. `:` may arrive as `_`:
# prometheus_client escapes it when Prometheus negotiates OpenMetrics (seen with Prometheus 2.42).
SERVING_TOKENS_QUERY = ('sum by (instance, job, model_name) (rate({__name__=~"vllm[:_]generation_tokens_total'
                        '|modeldeck_generation_tokens_total|llamacpp[:_]tokens_predicted_total"}[1m]))')


class FleetClient:
    def __init__(self, settings: "PrometheusSettings") -> None:
        self.settings = settings
        self._connection: Any = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.url)

    def _connect(self) -> Any:
        if self._connection is None:
            from prometheus_api_client import PrometheusConnect
            from urllib3.util.retry import Retry

            secret = self.settings.resolve_secret()
            headers = {"Authorization": f"Bearer {secret}"} if secret else None
            self._connection = PrometheusConnect(
                url=self.settings.url, headers=headers, disable_ssl=not self.settings.verify_tls,
                timeout=self.settings.timeout_s, retry=Retry(total=0))  # a live view: no backoff
        return self._connection

    def snapshot(self) -> FleetSnapshot:
        """Every DCGM GPU and the serving tokens/s, now."""
        if not self.configured:
            return FleetSnapshot("off", "no [prometheus] url in deck.toml")
        try:
            names = "|".join(DCGM_FIELDS)
            gpu_rows = self._connect().custom_query(f'{{__name__=~"{names}"}}')
            serving_rows = self._connect().custom_query(SERVING_TOKENS_QUERY)
        except Exception as error:  # requests/urllib3/API errors all mean the same here
            return FleetSnapshot("down", describe_failure(error), taken_at=time.time())
        return FleetSnapshot("ok", None, gpus_from_rows(gpu_rows),
                             tuple(_instant_series(row) for row in serving_rows), time.time())

    def history(self, query: str, minutes: int | None = None,
                step_s: float | None = None) -> tuple[FleetSeries, ...]:
        """A range query over the last `minutes` (default: [prometheus] history_minutes).
        Raises nothing: an unreachable server gives no series (snapshot() says why)."""
        if not self.configured:
            return ()
        minutes = minutes or self.settings.history_minutes
        end = datetime.now(timezone.utc)
        step = step_s or max(1.0, minutes * 60 / 300)  # about 300 points: enough for a chart
        try:
            rows = self._connect().custom_query_range(query, start_time=end - timedelta(minutes=minutes),
                                                      end_time=end, step=f"{step:g}s")
        except Exception:
            return ()
        return tuple(FleetSeries(_labels(row), tuple((float(ts), float(value))
                                                     for ts, value in row.get("values", ())))
                     for row in rows)

    def gpu_utilization_history(self, minutes: int | None = None) -> tuple[FleetSeries, ...]:
        return self.history("DCGM_FI_DEV_GPU_UTIL", minutes)

    def serving_tokens_history(self, minutes: int | None = None) -> tuple[FleetSeries, ...]:
        return self.history(SERVING_TOKENS_QUERY, minutes)


def gpus_from_rows(rows: list[dict[str, Any]]) -> tuple[GpuDevice, ...]:
    """Instant-query rows of DCGM series -> one GpuDevice per (host, gpu)."""
    fields: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        metric = row.get("metric", {})
        target = DCGM_FIELDS.get(metric.get("__name__", ""))
        if target is None:
            continue
        host = metric.get("Hostname") or metric.get("instance") or "?"
        index = int(metric.get("gpu", 0))
        entry = fields.setdefault((host, index), {"host": host, "index": index})
        entry.setdefault("name", metric.get("modelName"))
        entry.setdefault("uuid", metric.get("UUID"))
        entry[target[0]] = float(row["value"][1]) * target[1]
    return tuple(_device(entry) for _, entry in sorted(fields.items()))


def _device(entry: dict[str, Any]) -> GpuDevice:
    free = entry.pop("memory_free_bytes", None)
    used = entry.get("memory_used_bytes")
    for key in ("memory_used_bytes", "sm_clock_mhz", "memory_clock_mhz", "last_xid"):
        if entry.get(key) is not None:
            entry[key] = int(entry[key])
    total = int(used + free) if used is not None and free is not None else None
    return GpuDevice(memory_total_bytes=total, **entry)


def _labels(row: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(row.get("metric", {}).items()))


def _instant_series(row: dict[str, Any]) -> FleetSeries:
    timestamp, value = row["value"]
    return FleetSeries(_labels(row), ((float(timestamp), float(value)),))


def describe_failure(error: Exception) -> str:
    text = str(error).lower()
    if "refused" in text:
        return "refused"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "ssl" in text or "certificate" in text:
        return "tls"
    return f"{type(error).__name__}: {str(error)[:160]}"
