"""Where the diagnosis' inputs and outputs travel: NVML's clock event reasons into GpuDevice (new
and old binding names, and a binding with neither), replayed readings, and `watch --json`
(a `diagnosis` per GPU and per endpoint)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.telemetry.gpu import NvmlSource, ReplayFormatError, ReplaySource
from tests.conftest import run_modeldeck
from tests.telemetry.test_gpu_sources import FakeNvml


class ThrottledNvml(FakeNvml):
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return 0x4 | 0x40  # sw_power_cap, hw_thermal_slowdown


class OldThrottledNvml(FakeNvml):
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return 0x20  # sw_thermal_slowdown


@pytest.mark.parametrize("fake, expected", [
    (ThrottledNvml(devices=1), ("sw_power_cap", "hw_thermal_slowdown")),
    (OldThrottledNvml(devices=1), ("sw_thermal_slowdown",)),
    (FakeNvml(devices=1), None)])
def test_nvml_reports_its_throttle_reasons(monkeypatch, fake, expected):
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (device,) = NvmlSource().read().devices
    assert device.throttle_reasons == expected


def test_replayed_readings_carry_throttle_reasons():
    reading = {"devices": [{"index": 0, "throttle_reasons": ["sw_power_cap"]}, {"index": 1}]}
    first, second = ReplaySource([reading]).read().devices
    assert first.throttle_reasons == ("sw_power_cap",) and second.throttle_reasons is None
    with pytest.raises(ReplayFormatError, match="throttle_reasons"):
        ReplaySource([{"devices": [{"index": 0, "throttle_reasons": "hot"}]}])


def test_watch_json_has_a_diagnosis_per_gpu_and_endpoint(deck_home: Path, tmp_path: Path):
    readings = tmp_path / "gpus.jsonl"
    readings.write_text(json.dumps({"devices": [
        {"index": 0, "utilization_pct": 97.0, "memory_utilization_pct": 88.0,
         "temperature_c": 70.0, "power_w": 690.0, "power_limit_w": 700.0,
         "throttle_reasons": ["sw_power_cap"]}]}) + "\n")
    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text(  # nothing listens there: a down endpoint
        '[[endpoints]]\nname = "gone"\nkind = "vllm"\nurl = "http://127.0.0.1:9"\n'
        "timeout_s = 0.5\n")
    result = run_modeldeck("watch", "--json", "--count", "1", "--gpu-replay", str(readings),
                           home=deck_home)
    assert result.code == 0, result
    snapshot = json.loads(result.stdout.splitlines()[-1])
    (gpu,) = snapshot["gpus"]["devices"]
    assert gpu["throttle_reasons"] == ["sw_power_cap"]
    assert gpu["diagnosis"]["rules"] == ["power-throttle", "memory-bandwidth-bound"]
    assert gpu["diagnosis"]["line"].startswith("power capped (sw_power_cap, 690/700 W)")
    (endpoint,) = snapshot["endpoints"]
    assert endpoint["diagnosis"]["rules"] == ["down"]
    assert endpoint["diagnosis"]["line"].startswith("not checked: down")


def test_the_console_rows_carry_the_diagnosis_line():
    from console.adapters import endpoint_row, gpu_row
    from engine.snapshots import Diagnosis, EndpointSnapshot, GpuDevice

    line = Diagnosis("KV cache full (97%)", ("kv-cache-full",))
    endpoint = EndpointSnapshot("v", "vllm", "http://127.0.0.1:1", "up", diagnosis=line)
    assert endpoint_row(endpoint).diagnosis == "KV cache full (97%)"
    assert gpu_row(GpuDevice(0, diagnosis=Diagnosis("ok: util 5%", ("ok",)))).diagnosis == "ok: util 5%"
    assert gpu_row(GpuDevice(0)).diagnosis == ""


@pytest.mark.parametrize("running, verdict", [(4, "at capacity: batch full (4), 3 waiting"),
                                              (1, "queue-bound: 3 waiting while the batch holds 1 of 4")])
def test_a_servers_batch_limit_tells_a_full_batch_from_one_with_room(running, verdict):
    """modeldeck's server exports its batch limit (modeldeck_max_num_seqs); the sampler hands it
    to the diagnosis, which can then tell a queue behind a full batch from a stalled admission."""
    from engine.remote.metrics import parse_scrape
    from engine.snapshots import EndpointSnapshot
    from engine.telemetry.diagnosis import diagnose_endpoint
    from engine.telemetry.sampler import _batch_capacity

    body = (f'modeldeck_num_requests_running{{version="tiny@1"}} {running}\n'
            'modeldeck_num_requests_waiting{version="tiny@1"} 3\n'
            "modeldeck_max_num_seqs 4\n")
    scrape = parse_scrape(body, 0.0)
    endpoint = EndpointSnapshot("local", "modeldeck", "http://127.0.0.1:1", "up",
                                running=float(running), waiting=3.0)
    assert verdict in diagnose_endpoint(endpoint, _batch_capacity(scrape)).line
    assert _batch_capacity(parse_scrape(body.replace("modeldeck_max_num_seqs 4\n", ""), 0.0)) is None
