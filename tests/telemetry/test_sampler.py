"""The background sampler: snapshots, bounded history, threads, staleness, and its import weight."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.config import EndpointSettings
from engine.remote.poller import EndpointPoller
from engine.telemetry.gpu import ReplaySource
from engine.telemetry.host import HostSource
from engine.telemetry.sampler import Sampler
from tests.conftest import REPO
from tests.telemetry.conftest import recorded
from tests.telemetry.replay_server import Script


def wait_until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_ticks_publish_gpus_host_and_bounded_history(gpu_readings: Path):
    readings = [json.loads(line) for line in gpu_readings.read_text().splitlines()]
    with Sampler(ReplaySource.from_file(gpu_readings), HostSource(), history_points=5) as sampler:
        assert sampler.latest().gpus.status == "pending" and sampler.latest().sequence == 0
        snapshots = [sampler.tick() for _ in range(7)]
    last = snapshots[-1]
    assert last.sequence == 7 and last.gpus.status == "ok" and len(last.gpus.devices) == 8
    expected = [readings[tick % len(readings)]["devices"][0]["utilization_pct"] for tick in range(2, 7)]
    assert last.gpus.devices[0].utilization_history == tuple(expected)  # the last 5, oldest first
    assert sampler.history("gpu.0.utilization_pct") == tuple(expected)
    assert sampler.history("gpu.7.power_w") == ()  # never known: no made-up zeros
    assert last.host.cpu_count >= 1 and last.host.memory_total_bytes > 0
    assert snapshots[0].host.cpu_pct is None and last.host.cpu_pct is not None
    assert len(last.host.cpu_history) == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        last.sequence = 0  # type: ignore[misc]
    assert snapshots[0].sequence == 1  # earlier snapshots are untouched by later ticks


def test_background_threads_keep_publishing_and_stop(gpu_readings: Path):
    sampler = Sampler(ReplaySource.from_file(gpu_readings), HostSource(), interval_s=0.02)
    seen_device_counts: set[int] = set()
    stop_reading = threading.Event()

    def reader() -> None:  # a UI thread reading while the sampler writes
        while not stop_reading.is_set():
            seen_device_counts.add(len(sampler.latest().gpus.devices))

    reading = threading.Thread(target=reader)
    reading.start()
    sampler.start()
    try:
        wait_until(lambda: sampler.latest().sequence >= 5)
    finally:
        sampler.close()
        stop_reading.set()
        reading.join()
    stopped_at = sampler.latest().sequence
    assert seen_device_counts <= {0, 8}  # a reader sees a whole snapshot or the initial empty one
    assert not [t for t in threading.enumerate() if t.name.startswith("modeldeck-sampler")]
    assert sampler.latest().sequence == stopped_at


def test_endpoints_in_the_sampler_go_stale_when_polls_stop(replay_server):
    url = replay_server.add("v", Script(bodies=[recorded("vllm-0.32-cpu-idle.txt"),
                                                recorded("vllm-0.32-cpu-after-16req.txt")]))
    poller = EndpointPoller([EndpointSettings(name="v", kind="vllm", url=url)])
    with Sampler(None, None, poller, interval_s=1.0, stale_after_s=30) as sampler:
        assert sampler.latest().endpoints[0].status == "stale"  # not polled yet
        sampler.tick()
        second = sampler.tick()
        assert second.endpoints[0].status == "up" and second.models[0].model == "v"
        assert sampler.history("endpoint.v.tokens_per_s") == (second.endpoints[0].tokens_per_s,)
        checked_at = second.endpoints[0].checked_at
        assert sampler.latest(now=checked_at + 29).endpoints[0].status == "up"
        stale = sampler.latest(now=checked_at + 31).endpoints[0]  # no poll for 31 s
    assert stale.status == "stale" and stale.reason.startswith("last poll")
    assert stale.tokens_per_s == second.endpoints[0].tokens_per_s  # last known values kept
    assert sampler.latest().gpus.status == "no-nvml"  # GPU sampling off: said so


def test_watch_and_sampler_import_no_torch_or_textual(tmp_path: Path, gpu_readings: Path):
    probe = ("import io, contextlib, json, sys\nfrom console.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    assert main(['watch', '--json', '--count', '1', '--gpu-replay', {str(gpu_readings)!r}]) == 0\n"
             "import engine.telemetry.sampler, engine.remote.poller, engine.telemetry.prometheus\n"
             "print(json.dumps(sorted(sys.modules)))")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "MODELDECK_HOME": str(tmp_path)}, timeout=120)
    assert completed.returncode == 0, completed.stderr
    loaded = {name.split(".")[0] for name in json.loads(completed.stdout.splitlines()[-1])}
    assert not loaded & {"torch", "transformers", "textual", "rich"}


class BrokenGpuSource:
    """A source that fails every read (a driver that crashes mid-run cannot be produced here)."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self):
        self.reads += 1
        raise RuntimeError("driver went away")

    def close(self) -> None:
        pass


def test_a_failing_source_becomes_an_error_status_and_the_thread_lives_on():
    source = BrokenGpuSource()
    sampler = Sampler(source, HostSource(), interval_s=0.01).start()
    try:
        wait_until(lambda: source.reads >= 3)  # kept sampling after the first failure
        gpus = sampler.latest().gpus
    finally:
        sampler.close()
    assert gpus.status == "error" and "driver went away" in gpus.reason


def test_host_rates_appear_from_the_second_reading():
    host = HostSource()
    first, second = host.read(), host.read()
    assert first.net_rx_bytes_per_s is None and first.cpu_pct is None
    assert second.net_rx_bytes_per_s is not None and second.net_rx_bytes_per_s >= 0
    assert len(second.cpu_per_core_pct) == second.cpu_count
    assert 0 < second.memory_used_bytes <= second.memory_total_bytes
