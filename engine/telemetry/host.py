"""The host through psutil: CPU per core, memory, load, and disk and network rates.

Rates and CPU use need two readings, so the first snapshot has None for them. psutil's per-core CPU
percentages are measured since the previous call, so one HostSource belongs to one sampler.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from engine.snapshots import HostSnapshot


class HostSource:
    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._lock = threading.Lock()
        self._cpu_count = psutil.cpu_count() or 1
        self._previous: tuple[float, Any, Any] | None = None
        psutil.cpu_percent(percpu=True)  # primes the since-last-call measurement

    def read(self) -> HostSnapshot:
        psutil = self._psutil
        with self._lock:
            now = time.monotonic()
            per_core = tuple(float(value) for value in psutil.cpu_percent(percpu=True))
            if self._previous is None:
                per_core = ()  # measured since construction, a moment ago: meaningless
            disk, network = _counters(psutil)
            rates = self._rates(now, disk, network)
            self._previous = (now, disk, network)
        memory = psutil.virtual_memory()
        load = _load_average()
        return HostSnapshot(
            cpu_count=self._cpu_count,
            cpu_pct=sum(per_core) / len(per_core) if per_core else None,
            cpu_per_core_pct=per_core,
            memory_used_bytes=int(memory.total - memory.available),
            memory_total_bytes=int(memory.total), memory_pct=float(memory.percent),
            swap_used_bytes=_swap_used(psutil),
            load_1m=load[0], load_5m=load[1], load_15m=load[2],
            disk_read_bytes_per_s=rates[0], disk_write_bytes_per_s=rates[1],
            net_rx_bytes_per_s=rates[2], net_tx_bytes_per_s=rates[3],
            taken_at=time.time())

    def _rates(self, now: float, disk: Any, network: Any) -> tuple[float | None, ...]:
        if self._previous is None:
            return (None, None, None, None)
        before, old_disk, old_network = self._previous
        elapsed = now - before
        if elapsed <= 0:
            return (None, None, None, None)
        return (_rate(old_disk, disk, "read_bytes", elapsed),
                _rate(old_disk, disk, "write_bytes", elapsed),
                _rate(old_network, network, "bytes_recv", elapsed),
                _rate(old_network, network, "bytes_sent", elapsed))

    def close(self) -> None:
        pass


def _counters(psutil: Any) -> tuple[Any, Any]:
    try:
        disk = psutil.disk_io_counters()
    except (OSError, RuntimeError):  # containers without /proc/diskstats
        disk = None
    try:
        network = psutil.net_io_counters()
    except (OSError, RuntimeError):
        network = None
    return disk, network


def _rate(old: Any, new: Any, field: str, elapsed: float) -> float | None:
    if old is None or new is None:
        return None
    delta = getattr(new, field) - getattr(old, field)
    return delta / elapsed if delta >= 0 else None  # a counter that went back: no rate this tick


def _load_average() -> tuple[float | None, float | None, float | None]:
    try:
        one, five, fifteen = os.getloadavg()
        return one, five, fifteen
    except (OSError, AttributeError):
        return None, None, None


def _swap_used(psutil: Any) -> int | None:
    try:
        return int(psutil.swap_memory().used)
    except (OSError, RuntimeError):
        return None
