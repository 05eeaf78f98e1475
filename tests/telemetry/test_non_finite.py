"""NaN and ±Inf never reach a script as bare `NaN` (not JSON), and an endpoint publishing them is
not shown `up`: a real loopback server serves /metrics with such values."""

from __future__ import annotations

import json
from pathlib import Path

from tests.telemetry.conftest import recorded
from tests.telemetry.replay_server import Script
from tests.telemetry.test_telemetry_cli import write_deck

# vLLM's series with the values a sick exporter publishes (a gauge of 0/0, an overflowed counter)
SICK = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} NaN
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:kv_cache_usage_perc{model_name="m"} +Inf
vllm:generation_tokens_total{model_name="m"} 120.0
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} -Inf
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.2
"""


def strict(line: str) -> dict:
    """JSON as JSON.parse reads it: NaN, Infinity and -Infinity are errors."""
    def reject(constant: str):
        raise AssertionError(f"bare {constant} in JSON output: {line[:200]}")

    return json.loads(line, parse_constant=reject)


def deck_with_sick_and_healthy(deck_home: Path, replay_server) -> None:
    sick = replay_server.add("sick", Script(bodies=[SICK]))
    healthy = replay_server.add("healthy", Script(bodies=[recorded("vllm-0.32-cpu-idle.txt"),
                                                          recorded("vllm-0.32-cpu-after-16req.txt")]))
    write_deck(deck_home, [{"name": "sick", "kind": "vllm", "url": sick, "timeout_s": 5},
                           {"name": "healthy", "kind": "vllm", "url": healthy, "timeout_s": 5}])


def test_endpoint_with_non_finite_metrics_is_degraded(cli, deck_home, replay_server):
    deck_with_sick_and_healthy(deck_home, replay_server)
    result = cli("endpoints", "check", "--json", "--window", "0.2")
    assert result.code == 0, result
    endpoints = {e["name"]: e for e in strict(result.stdout)["endpoints"]}
    sick, healthy = endpoints["sick"], endpoints["healthy"]
    assert sick["status"] == "degraded"
    assert "non-finite" in sick["reason"] and "vllm:num_requests_running" in sick["reason"]
    assert sick["running"] is None and sick["kv_cache_pct"] is None and sick["ttft_p95_s"] is None
    assert healthy["status"] == "up" and healthy["tokens_per_s"] is not None
    human = cli("endpoints", "check")
    assert "degraded" in human.stdout
    assert_no_non_finite_cells(human.stdout)


def test_watch_json_lines_are_strict_json(cli, deck_home, replay_server, tmp_path):
    deck_with_sick_and_healthy(deck_home, replay_server)
    # NVML readings with non-finite values too (a driver that returns garbage for one device)
    readings = tmp_path / "gpus.jsonl"
    reading = {"status": "ok", "reason": None, "driver_version": "550", "devices": [
        {"index": 0, "name": "GPU", "uuid": "GPU-0", "utilization_pct": float("nan"),
         "memory_used_bytes": 1, "memory_total_bytes": 2, "temperature_c": float("inf"),
         "power_w": float("-inf"), "processes": []}]}
    readings.write_text(json.dumps(reading) + "\n")
    result = cli("watch", "--json", "--count", "2", "--interval", "0.1", "--gpu-replay", str(readings))
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        document = strict(line)
        device = document["gpus"]["devices"][0]
        assert (device["utilization_pct"], device["temperature_c"], device["power_w"]) == (None, None, None)
        statuses = {e["name"]: e["status"] for e in document["endpoints"]}
        assert statuses["sick"] == "degraded"
    text = cli("watch", "--count", "1", "--gpu-replay", str(readings))
    assert text.code == 0, text
    assert_no_non_finite_cells(text.stdout)


def assert_no_non_finite_cells(text: str) -> None:
    """A table shows an unknown number as `-`, never `nan`, `inf` or `-inf` (the reason column
    may name NaN/Inf: that is the reason, not a value)."""
    cells = [cell for line in text.splitlines() for cell in line.split()
             if "(NaN/Inf)" not in line]
    assert not [cell for cell in cells if cell.lower().strip("%-+") in ("nan", "inf")], text
