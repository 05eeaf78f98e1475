"""The fleet through a real Prometheus server (Debian's package) scraping a test exporter."""

from __future__ import annotations

import time

from engine.config import PrometheusSettings
from engine.telemetry.prometheus import MIB, FleetClient
from tests.prometheus_server import free_port
from tests.telemetry.conftest import FleetExporter


def test_dcgm_gpus_per_host_and_serving_rates(fleet_prometheus):
    server, _ = fleet_prometheus
    fleet = FleetClient(PrometheusSettings(url=server.url)).snapshot()
    assert (fleet.status, fleet.reason) == ("ok", None)
    devices = {(gpu.host, gpu.index): gpu for gpu in fleet.gpus}
    assert set(devices) == {(host, int(index)) for host, index in FleetExporter.GPUS}
    for (host, index), (util, used, free, temp, power) in FleetExporter.GPUS.items():
        gpu = devices[(host, int(index))]
        assert gpu.utilization_pct == util and gpu.temperature_c == temp and gpu.power_w == power
        assert gpu.memory_used_bytes == int(used * MIB)
        assert gpu.memory_total_bytes == int((used + free) * MIB)
        assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.uuid == f"GPU-{host}-{index}"
    (serving,) = fleet.serving
    assert serving.label_dict["model_name"] == "smollm2"
    assert serving.points[0][1] > 0  # generated tokens/s, from the real rate() over the counter


def test_range_queries_give_history_for_the_first_paint(fleet_prometheus):
    server, _ = fleet_prometheus
    client = FleetClient(PrometheusSettings(url=server.url, history_minutes=2))
    history = client.gpu_utilization_history()
    by_gpu = {(s.label_dict["Hostname"], s.label_dict["gpu"]): s for s in history}
    assert set(by_gpu) == set(FleetExporter.GPUS)
    for key, series in by_gpu.items():
        assert series.points and {value for _, value in series.points} == {FleetExporter.GPUS[key][0]}
        times = [timestamp for timestamp, _ in series.points]
        assert times == sorted(times)
    # range points sit on whole steps: the first one with two scrapes behind it may be a second away
    deadline = time.monotonic() + 30
    while not (tokens := client.serving_tokens_history(minutes=1)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert tokens and tokens[0].label_dict["model_name"] == "smollm2"
    assert tokens[0].points and all(value > 0 for _, value in tokens[0].points)


def test_unreachable_or_unconfigured_prometheus_is_a_status():
    down = FleetClient(PrometheusSettings(url=f"http://127.0.0.1:{free_port()}", timeout_s=2)).snapshot()
    assert (down.status, down.reason) == ("down", "refused") and down.gpus == ()
    assert FleetClient(PrometheusSettings(url=f"http://127.0.0.1:{free_port()}")).history("up") == ()
    off = FleetClient(PrometheusSettings()).snapshot()
    assert off.status == "off" and "[prometheus]" in off.reason


def test_sampler_paints_fleet_history_first_then_appends(fleet_prometheus):
    from engine.telemetry.sampler import Sampler

    server, _ = fleet_prometheus
    client = FleetClient(PrometheusSettings(url=server.url, history_minutes=1))
    past = {(s.label_dict["Hostname"], s.label_dict["gpu"]): len(s.points)
            for s in client.gpu_utilization_history()}
    with Sampler(None, None, fleet=client) as sampler:
        snapshot = sampler.tick()
    assert snapshot.fleet.status == "ok" and len(snapshot.fleet.gpus) == 3
    busy = next(gpu for gpu in snapshot.fleet.gpus if (gpu.host, gpu.index) == ("host-a", 0))
    # the range query's points, then this tick's reading
    assert len(busy.utilization_history) >= past[("host-a", "0")] + 1 >= 2
    assert set(busy.utilization_history) == {91.0}
    assert sampler.history("fleet.host-b.0.utilization_pct")[-1] == 55.0


def test_watch_shows_the_fleet(fleet_prometheus, deck_home):
    from tests.conftest import run_modeldeck

    server, _ = fleet_prometheus
    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text(f'[prometheus]\nurl = "{server.url}"\n')
    machine = run_modeldeck("watch", "--json", "--count", "1", home=deck_home)
    assert machine.code == 0, machine
    fleet = machine.json["fleet"]
    assert fleet["status"] == "ok"
    assert sorted((g["host"], g["index"]) for g in fleet["gpus"]) == [("host-a", 0), ("host-a", 1), ("host-b", 0)]
    human = run_modeldeck("watch", "--count", "1", home=deck_home)
    assert human.code == 0 and "host-b" in human.stdout and "smollm2" in human.stdout
    local = run_modeldeck("watch", "--json", "--count", "1", "--local", home=deck_home)
    assert local.json["fleet"] is None
