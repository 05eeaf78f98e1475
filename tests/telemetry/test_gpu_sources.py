"""GPU sources: the absent-GPU path for real, recorded readings through the replay source, and
the NVML code path against a stand-in pynvml (this machine has no GPU or driver: the stand-in
produces the device faults NVML reports, which cannot be produced here for real)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from engine.telemetry.gpu import NvmlSource, ReplaySource, load_readings, record


def test_this_machine_reports_its_gpus_or_why_not():
    source = NvmlSource()
    first, second = source.read(), source.read()
    source.close()
    assert first.status in ("ok", "no-nvml", "no-gpu")
    assert second.status == first.status
    if first.status != "ok":
        assert first.devices == () and "NVML" in first.reason
    else:
        assert first.devices and first.reason is None
    assert json.loads(json.dumps(first.to_dict()))["status"] == first.status


def test_replay_returns_recorded_readings_in_turn(gpu_readings: Path):
    source = ReplaySource.from_file(gpu_readings)
    lines = [json.loads(line) for line in gpu_readings.read_text().splitlines()]
    snapshots = [source.read() for _ in range(len(lines) + 1)]
    for snapshot, line in zip(snapshots, lines):
        assert snapshot.status == "ok" and snapshot.source == "replay"
        assert [d.utilization_pct for d in snapshot.devices] == [d["utilization_pct"] for d in line["devices"]]
    assert snapshots[-1].devices == snapshots[0].devices  # cycles
    board = snapshots[0].devices[7]
    assert board.power_w is None and board.sm_clock_mhz is None  # cannot report: null, not error
    assert snapshots[0].devices[0].processes[0].user == "serve"
    document = snapshots[0].to_dict()
    assert document["devices"][7]["power_w"] is None
    assert document["devices"][0]["memory_total_bytes"] == 85520809984


def test_replay_reads_json_documents_too(tmp_path: Path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"devices": []}, {"status": "no-nvml", "reason": "driver gone"}]))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"readings": [{"devices": [{"name": "X", "utilization_pct": 5}]}]},
                                  indent=2))
    replay = ReplaySource.from_file(listed)
    assert replay.read().status == "no-gpu"
    assert (replay.read().status, replay.read().status) == ("no-nvml", "no-gpu")
    assert ReplaySource.from_file(wrapped).read().devices[0].utilization_pct == 5
    assert len(load_readings(wrapped)) == 1


class FakeNvml(types.ModuleType):
    """Just enough of pynvml's surface; counts handle lookups to check they are cached."""

    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    class NVMLError(Exception):
        pass

    def __init__(self, devices: int = 2, library_missing: bool = False) -> None:
        super().__init__("pynvml")
        self.devices, self.library_missing = devices, library_missing
        self.handle_lookups = 0

    def nvmlInit(self):
        if self.library_missing:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        pass

    def nvmlSystemGetDriverVersion(self):
        return "550.90.07"

    def nvmlDeviceGetCount(self):
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, index):
        self.handle_lookups += 1
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA A10"

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=2 << 30, total=24 << 30)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 150_000

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        if handle == 1:
            raise self.NVMLError("Not Supported")
        return 55

    def nvmlDeviceGetPowerUsage(self, handle):
        return 61_500

    def nvmlDeviceGetClockInfo(self, handle, clock):
        if handle == 1:
            raise self.NVMLError("Not Supported")
        return 1695 if clock == self.NVML_CLOCK_SM else 6251

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [types.SimpleNamespace(pid=1, usedGpuMemory=1 << 30)] if handle == 0 else []

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        raise self.NVMLError("Not Supported")


class FakeNvmlWithEvents(FakeNvml):
    """Adds NVML's event API: device 1 cannot register for events; XIDs are queued by a test."""

    nvmlEventTypeXidCriticalError = 0x8

    def __init__(self, devices: int = 3) -> None:
        super().__init__(devices)
        self.queued: list[types.SimpleNamespace] = []
        self.freed = False

    def nvmlEventSetCreate(self):
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle, kinds, event_set):
        if handle == 1:
            raise self.NVMLError("Not Supported")

    def nvmlEventSetWait_v2(self, event_set, timeout_ms):
        assert timeout_ms == 0  # a read never waits for an event
        if not self.queued:
            raise self.NVMLError("Timeout")
        return self.queued.pop(0)

    def nvmlEventSetFree(self, event_set):
        self.freed = True

    def xid(self, handle: int, code: int) -> None:
        self.queued.append(types.SimpleNamespace(device=handle, eventData=code,
                                                 eventType=self.nvmlEventTypeXidCriticalError))


def test_xid_errors_are_counted_from_nvml_events_per_device(monkeypatch):
    fake = FakeNvmlWithEvents(devices=3)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    source = NvmlSource()
    first = source.read().devices
    assert [(device.xid_errors, device.last_xid) for device in first] == [(0, None), (None, None),
                                                                         (0, None)]
    fake.xid(2, 79)
    fake.xid(2, 48)
    fake.xid(0, 13)
    devices = source.read().devices
    assert [(device.xid_errors, device.last_xid) for device in devices] == [(1, 13), (None, None),
                                                                           (2, 48)]
    assert source.read().devices[2].xid_errors == 2  # counted once, not per read
    source.close()
    assert fake.freed


def test_nvml_path_caches_handles_and_nulls_what_a_device_cannot_report(monkeypatch):
    fake = FakeNvml(devices=2)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    source = NvmlSource()
    snapshots = [source.read() for _ in range(3)]
    assert fake.handle_lookups == 2  # looked up once, not per read
    snapshot = snapshots[-1]
    assert (snapshot.status, snapshot.driver_version) == ("ok", "550.90.07")
    first, second = snapshot.devices
    assert (first.name, first.uuid, first.utilization_pct) == ("NVIDIA A10", "GPU-0", 40.0)
    assert first.power_w == 61.5 and first.power_limit_w == 150.0
    assert first.memory_total_bytes == 24 << 30 and first.sm_clock_mhz == 1695
    assert first.processes[0].pid == 1 and first.processes[0].memory_bytes == 1 << 30
    assert first.processes[0].name  # pid 1 exists here: psutil names it
    assert second.temperature_c is None and second.sm_clock_mhz is None
    assert second.utilization_pct == 41.0 and second.processes == ()


def test_nvml_missing_library_and_zero_devices_are_statuses(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(library_missing=True))
    missing = NvmlSource().read()
    assert missing.status == "no-nvml" and "Shared Library" in missing.reason
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(devices=0))
    empty = NvmlSource().read()
    assert (empty.status, empty.devices) == ("no-gpu", ())


def test_recorded_nvml_readings_replay_identically(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(devices=2))
    path = tmp_path / "readings.jsonl"
    assert record(path, count=2, interval_s=0.0) == 2
    live = NvmlSource().read()
    replayed = ReplaySource.from_file(path).read()
    assert replayed.devices == live.devices
    assert replayed.driver_version == live.driver_version


def test_empty_replay_is_refused(tmp_path: Path):
    with pytest.raises(ValueError):
        ReplaySource([])
