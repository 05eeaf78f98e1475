"""A recording replays every field the sampler publishes: TelemetrySnapshot.from_dict inverts
to_dict for nested snapshots (diagnosis, SLO, loaded models, fleet series), so a field added to
the snapshot classes comes back from a recording without a second decoder to keep in step."""

from __future__ import annotations

import json

from engine.snapshots import (Diagnosis, EndpointSnapshot, FleetSeries, FleetSnapshot, GpuDevice,
                              GpuProcess, GpuSnapshot, HostSnapshot, LoadedModel, ModelStats,
                              SloStats, TelemetrySnapshot, VersionStats)


def busy_snapshot() -> TelemetrySnapshot:
    device = GpuDevice(0, "H100", utilization_pct=97.0, processes=(GpuProcess(41, "python3"),),
                       throttle_reasons=("sw_power_cap",),
                       diagnosis=Diagnosis("power throttled", ("power-throttle",)))
    endpoint = EndpointSnapshot(
        "local", "modeldeck", "http://127.0.0.1:8000", "up", tokens_per_s=120.0,
        slo=SloStats(ttft=0.9, joint=0.85), diagnosis=Diagnosis("queueing", ("queueing",)),
        versions=(VersionStats("tiny@2", slo=SloStats(ttft=0.5)),),
        loaded_models=(LoadedModel("llama3", vram_bytes=1 << 30),))
    fleet = FleetSnapshot("ok", gpus=(device,),
                          serving=(FleetSeries((("model_name", "m"),), ((1.0, 2.0),)),))
    return TelemetrySnapshot(1.0, GpuSnapshot("ok", devices=(device,)), HostSnapshot(2, cpu_pct=5.0),
                             (endpoint,), models=(ModelStats("m", 2, 1, slo=SloStats(ttft=0.7)),),
                             fleet=fleet)


def test_every_nested_snapshot_comes_back_from_json():
    snapshot = busy_snapshot()
    assert TelemetrySnapshot.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot


def test_fields_this_build_does_not_know_are_left_out():
    data = busy_snapshot().to_dict()
    data["gpus"]["devices"][0]["from_a_newer_build"] = 1
    assert TelemetrySnapshot.from_dict(data).gpus.devices[0].diagnosis.line == "power throttled"
