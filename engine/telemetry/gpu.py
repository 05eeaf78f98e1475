"""GPU readings: NVML on a real box, or a replay of recorded readings for tests and benchmarks.

`NvmlSource` is the default. It initialises NVML once, caches device handles and the facts
that do not change (name, UUID, memory total, power limit), and turns every field a device
cannot report into None. A missing library or driver is `no-nvml`, zero devices `no-gpu`:
data in the snapshot, never an exception.

`ReplaySource` reads readings recorded as JSON or JSONL (one reading per line) and returns
them in turn, cycling. It is never chosen implicitly: tests and benchmarks construct it.
Record real readings on a GPU box with `python -m engine.telemetry.gpu record OUT.jsonl`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, cast

from engine.snapshots import GpuDevice, GpuProcess, GpuSnapshot, GpuStatus


class GpuSource(Protocol):
    def read(self) -> GpuSnapshot: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _StaticFacts:
    """What NVML reports once per device and we never ask again."""

    handle: Any
    name: str | None
    uuid: str | None
    memory_total_bytes: int | None
    power_limit_w: float | None


class NvmlSource:
    """Reads every GPU through nvidia-ml-py. Thread-safe; cheap after the first read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._devices: tuple[_StaticFacts, ...] | None = None
        self._driver_version: str | None = None
        self._failure: GpuSnapshot | None = None
        self._processes = _ProcessNames()
        self._xids: _XidEvents | None = None

    def read(self) -> GpuSnapshot:
        with self._lock:
            if self._devices is None and self._failure is None:
                self._start()
            if self._failure is not None:
                return _with_time(self._failure)
            assert self._devices is not None
            if not self._devices:
                return GpuSnapshot("no-gpu", "NVML found no GPU", (), self._driver_version,
                                   taken_at=time.time())
            if self._xids is not None:
                self._xids.drain()
            devices = tuple(self._read_device(index, facts)
                            for index, facts in enumerate(self._devices))
            return GpuSnapshot("ok", None, devices, self._driver_version, taken_at=time.time())

    def _start(self) -> None:
        try:
            import pynvml  # nvidia-ml-py
        except ImportError as error:
            self._failure = GpuSnapshot("no-nvml", f"nvidia-ml-py is not installed ({error})")
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            self._failure = GpuSnapshot("no-nvml", f"NVML unavailable: {error}")
            return
        self._nvml = pynvml
        self._driver_version = _text(_ask(pynvml.nvmlSystemGetDriverVersion))
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except pynvml.NVMLError as error:
            self._failure = GpuSnapshot("error", f"NVML could not list devices: {error}")
            return
        self._devices = tuple(self._static_facts(handle) for handle in handles)
        self._xids = _XidEvents(pynvml, handles)

    def _static_facts(self, handle: Any) -> _StaticFacts:
        nvml = self._nvml
        memory = _ask(nvml.nvmlDeviceGetMemoryInfo, handle)
        limit_mw = _ask(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        return _StaticFacts(handle, _text(_ask(nvml.nvmlDeviceGetName, handle)),
                            _text(_ask(nvml.nvmlDeviceGetUUID, handle)),
                            int(memory.total) if memory is not None else None,
                            limit_mw / 1000.0 if limit_mw is not None else None)

    def _read_device(self, index: int, facts: _StaticFacts) -> GpuDevice:
        nvml, handle = self._nvml, facts.handle
        rates = _ask(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _ask(nvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = _ask(nvml.nvmlDeviceGetPowerUsage, handle)
        return GpuDevice(
            index=index, name=facts.name, uuid=facts.uuid,
            utilization_pct=float(rates.gpu) if rates is not None else None,
            memory_utilization_pct=float(rates.memory) if rates is not None else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=facts.memory_total_bytes,
            temperature_c=_number(_ask(nvml.nvmlDeviceGetTemperature, handle,
                                       nvml.NVML_TEMPERATURE_GPU)),
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=facts.power_limit_w,
            sm_clock_mhz=_ask(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
            memory_clock_mhz=_ask(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM),
            processes=self._device_processes(handle),
            throttle_reasons=throttle_reasons(_ask(_event_reasons_call(nvml), handle)),
            **self._xid_fields(index))

    def _xid_fields(self, index: int) -> dict[str, Any]:
        xid_errors, last_xid = self._xids.counts(index) if self._xids is not None else (None, None)
        return {"xid_errors": xid_errors, "last_xid": last_xid}

    def _device_processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        nvml = self._nvml
        seen: dict[int, GpuProcess] = {}
        for query in (nvml.nvmlDeviceGetComputeRunningProcesses,
                      nvml.nvmlDeviceGetGraphicsRunningProcesses):
            for entry in _ask(query, handle) or ():
                memory = getattr(entry, "usedGpuMemory", None)
                name, user, command = self._processes.describe(int(entry.pid))
                seen[int(entry.pid)] = GpuProcess(int(entry.pid), name, user, command,
                                                  int(memory) if memory is not None else None)
        return tuple(seen.values())

    def close(self) -> None:
        with self._lock:
            if self._xids is not None:
                self._xids.close()
                self._xids = None
            if self._nvml is not None:
                _ask(self._nvml.nvmlShutdown)
                self._nvml, self._devices = None, None


class _XidEvents:
    """XID errors come from NVML only as events (there is no counter to read): a set registered
    for critical-error events on every device, drained without waiting at each read. Devices or
    drivers that do not support events report None, not 0."""

    MAX_PER_READ = 256  # a storm of XIDs must not hold up a tick

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml, self._handles = nvml, handles
        self._errors = [0 for _ in handles]
        self._last: list[int | None] = [None for _ in handles]
        self._watched = [False for _ in handles]
        self._set = _ask(getattr(nvml, "nvmlEventSetCreate", lambda: None))
        kind = getattr(nvml, "nvmlEventTypeXidCriticalError", None)
        if self._set is None or kind is None:
            return
        for index, handle in enumerate(handles):
            self._watched[index] = _succeeded(nvml.nvmlDeviceRegisterEvents, handle, kind,
                                              self._set)

    def drain(self) -> None:
        if self._set is None:
            return
        wait = getattr(self._nvml, "nvmlEventSetWait_v2", None) or self._nvml.nvmlEventSetWait
        for _ in range(self.MAX_PER_READ):
            event = _ask(wait, self._set, 0)  # NVMLError_Timeout (-> None): nothing waiting
            if event is None:
                return
            index = self._index_of(event.device)
            if index is not None:
                self._errors[index] += 1
                self._last[index] = int(event.eventData)

    def _index_of(self, handle: Any) -> int | None:
        for index, known in enumerate(self._handles):
            if known == handle:
                return index
        found = _ask(self._nvml.nvmlDeviceGetIndex, handle)
        return int(found) if found is not None and 0 <= found < len(self._handles) else None

    def counts(self, index: int) -> tuple[int | None, int | None]:
        """(XIDs seen, the last one's code); (None, None) for a device NVML cannot watch."""
        if not self._watched[index]:
            return None, None
        return self._errors[index], self._last[index]

    def close(self) -> None:
        if self._set is not None:
            _ask(self._nvml.nvmlEventSetFree, self._set)
            self._set = None


def _succeeded(call: Callable[..., Any], *args: Any) -> bool:
    """One NVML call that returns nothing: whether it worked."""
    import pynvml

    try:
        call(*args)
    except pynvml.NVMLError:
        return False
    return True


class _ProcessNames:
    """pid -> (name, user, command) through psutil, cached: processes live longer than a tick."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[str | None, str | None, str | None]] = {}

    def describe(self, pid: int) -> tuple[str | None, str | None, str | None]:
        if pid not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[pid] = _describe_process(pid)
        return self._cache[pid]


def _describe_process(pid: int) -> tuple[str | None, str | None, str | None]:
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return process.name(), process.username(), " ".join(process.cmdline()) or None
    except (psutil.Error, OSError):  # gone, in another PID namespace, or not ours to read
        return None, None, None


def _ask(call: Callable[..., Any], *args: Any) -> Any:
    """One NVML call; None when the device cannot report it (not supported, lost, no permission)."""
    import pynvml

    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


# NVML's clock event ("throttle") reason bits, named as nvidia-smi -q names them
THROTTLE_BITS = ((0x1, "gpu_idle"), (0x2, "applications_clocks_setting"), (0x4, "sw_power_cap"),
                 (0x8, "hw_slowdown"), (0x10, "sync_boost"), (0x20, "sw_thermal_slowdown"),
                 (0x40, "hw_thermal_slowdown"), (0x80, "hw_power_brake_slowdown"),
                 (0x100, "display_clock_setting"))


def _event_reasons_call(nvml: Any) -> Callable[..., Any]:
    """nvmlDeviceGetCurrentClocksEventReasons (drivers >= 535), else the older Throttle name;
    a binding with neither reports no reasons (None)."""
    return (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
            or (lambda handle: None))


def throttle_reasons(mask: int | None) -> tuple[str, ...] | None:
    """The names of the bits set in NVML's reason mask; None when NVML did not say."""
    if mask is None:
        return None
    return tuple(name for bit, name in THROTTLE_BITS if int(mask) & bit)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


# ---- replay -----------------------------------------------------------------------------------


class ReplaySource:
    """Recorded readings returned in turn (cycling). Each reading is a dict:
    `{"status": "ok", "driver_version": "...", "devices": [{GpuDevice fields...}, ...]}`;
    `status`/`reason` are optional (default `ok`). A file is JSONL (a reading per line) or one
    JSON document: a list of readings or `{"readings": [...]}`."""

    def __init__(self, readings: list[dict[str, Any]], source_name: str = "replay") -> None:
        if not readings:
            raise ValueError("a replay needs at least one reading")
        self._snapshots = tuple(_snapshot_from_reading(reading, number)
                                for number, reading in enumerate(readings, 1))
        self._next = 0
        self._lock = threading.Lock()
        self.source_name = source_name

    @classmethod
    def from_file(cls, path: str | Path) -> "ReplaySource":
        return cls(load_readings(Path(path)), source_name=f"replay:{Path(path).name}")

    def read(self) -> GpuSnapshot:
        with self._lock:
            snapshot = self._snapshots[self._next]
            self._next = (self._next + 1) % len(self._snapshots)
        return _with_time(snapshot)

    def close(self) -> None:
        pass


def _with_time(snapshot: GpuSnapshot) -> GpuSnapshot:
    return replace(snapshot, taken_at=time.time())


class ReplayFormatError(ValueError):
    """A recorded readings file that is not what `record` writes; says where, in one line."""


def load_readings(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ReplayFormatError("not UTF-8 text (JSON or JSONL readings)") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:  # JSONL: one reading per line
        return [_json_line(number, line) for number, line in enumerate(text.splitlines(), 1)
                if line.strip()]
    if isinstance(document, dict):
        document = document["readings"] if "readings" in document else [document]
    if not isinstance(document, list):
        raise ReplayFormatError("expected a reading, a list of readings or {\"readings\": [...]}")
    return document


def _json_line(number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ReplayFormatError(f"line {number}: not JSON ({error.msg})") from None


# GpuDevice / GpuProcess fields by the JSON type a reading must give them (or null)
_NUMBER_FIELDS = {"utilization_pct", "memory_utilization_pct", "temperature_c", "power_w",
                  "power_limit_w"}
_INTEGER_FIELDS = {"index", "memory_used_bytes", "memory_total_bytes", "sm_clock_mhz",
                   "memory_clock_mhz", "pid", "memory_bytes"}
_TEXT_FIELDS = {"name", "uuid", "user", "command", "host", "status", "reason", "driver_version"}
_GPU_STATUSES = ("ok", "no-nvml", "no-gpu", "error", "pending")


def _snapshot_from_reading(reading: Any, number: int = 1) -> GpuSnapshot:
    where = f"reading {number}"
    reading = _checked_fields(_object(reading, where), where)
    devices_list = _list(reading.get("devices", ()), f"{where}: devices")
    devices = tuple(_device_from_dict(index, entry, f"{where}: device {index}")
                    for index, entry in enumerate(devices_list))
    status = reading.get("status") or ("ok" if devices else "no-gpu")
    if status not in _GPU_STATUSES:
        raise ReplayFormatError(f"{where}: status must be one of {', '.join(_GPU_STATUSES)}")
    return GpuSnapshot(cast(GpuStatus, status), reading.get("reason"), devices,
                       reading.get("driver_version"), source="replay")


def _device_from_dict(index: int, entry: Any, where: str = "device") -> GpuDevice:
    known = set(GpuDevice.__dataclass_fields__) - {"processes", "utilization_history",
                                                   "throttle_reasons", "diagnosis"}
    fields = {key: value for key, value in _checked_fields(_object(entry, where), where).items()
              if key in known}
    if fields.get("index") is None:
        fields["index"] = index  # its position in the reading
    processes = tuple(_process_from_dict(process, f"{where}: process")
                      for process in _list(entry.get("processes", ()), f"{where}: processes"))
    reasons = entry.get("throttle_reasons")
    if reasons is not None and (not isinstance(reasons, list)
                                or not all(isinstance(reason, str) for reason in reasons)):
        raise ReplayFormatError(f"{where}: throttle_reasons must be a list of names or null")
    return GpuDevice(**fields, processes=processes,
                     throttle_reasons=tuple(reasons) if reasons is not None else None)


def _process_from_dict(entry: Any, where: str) -> GpuProcess:
    fields = _checked_fields(_object(entry, where), where)
    if fields.get("pid") is None:
        raise ReplayFormatError(f"{where}: needs a pid")
    return GpuProcess(**{key: value for key, value in fields.items()
                         if key in GpuProcess.__dataclass_fields__})


def _checked_fields(document: dict[str, Any], where: str) -> dict[str, Any]:
    """Each known field has its JSON type (or null): a replayed number is never a string."""
    for key, value in document.items():
        if value is None:
            continue
        if key in _NUMBER_FIELDS and not _is_number(value, float):
            raise ReplayFormatError(f"{where}: {key} must be a number or null")
        if key in _INTEGER_FIELDS and not _is_number(value, int):
            raise ReplayFormatError(f"{where}: {key} must be a whole number or null")
        if key in _TEXT_FIELDS and not isinstance(value, str):
            raise ReplayFormatError(f"{where}: {key} must be text or null")
    return document


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplayFormatError(f"{where}: expected a JSON object")
    return value


def _list(value: Any, where: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ReplayFormatError(f"{where}: expected a list")
    return value


def reading_from_snapshot(snapshot: GpuSnapshot) -> dict[str, Any]:
    """The JSON form ReplaySource reads (what `record` writes)."""
    document = snapshot.to_dict()
    for device in document["devices"]:
        device.pop("utilization_history", None)
        device.pop("diagnosis", None)
    return {key: document[key] for key in ("status", "reason", "driver_version", "devices")}


def record(path: Path, count: int, interval_s: float) -> int:
    """Write `count` NVML readings to `path` as JSONL, for replay elsewhere."""
    source = NvmlSource()
    with path.open("w") as out:
        for number in range(count):
            if number:
                time.sleep(interval_s)
            out.write(json.dumps(reading_from_snapshot(source.read())) + "\n")
    source.close()
    return count


if __name__ == "__main__":  # python -m engine.telemetry.gpu record OUT.jsonl [COUNT] [INTERVAL]
    if len(sys.argv) < 3 or sys.argv[1] != "record":
        sys.exit("usage: python -m engine.telemetry.gpu record OUT.jsonl [COUNT] [INTERVAL_S]")
    written = record(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 10,
                     float(sys.argv[4]) if len(sys.argv) > 4 else 1.0)
    print(f"recorded {written} readings to {sys.argv[2]}")
