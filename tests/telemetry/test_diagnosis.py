"""The one-line diagnosis (engine.telemetry.diagnosis): a table per rule, each row a snapshot and
what the line must say; "ok" names the numbers it checked; hypothesis: any snapshot gives one
line, and "ok" exactly when no rule matched."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from engine.snapshots import EndpointSnapshot, GpuDevice, SloStats
from engine.telemetry.diagnosis import diagnose_endpoint, diagnose_gpu, diagnose_job
from engine.telemetry.gpu import throttle_reasons

GIB = 1 << 30


def endpoint(**fields) -> EndpointSnapshot:
    return EndpointSnapshot("v", "vllm", "http://127.0.0.1:1", fields.pop("status", "up"), **fields)


def gpu(**fields) -> GpuDevice:
    base = dict(index=0, utilization_pct=60.0, memory_utilization_pct=30.0,
                memory_used_bytes=40 * GIB, memory_total_bytes=80 * GIB, temperature_c=60.0,
                power_w=300.0, power_limit_w=700.0, throttle_reasons=())
    return GpuDevice(**{**base, **fields})


SLO_MET = SloStats(ttft=0.99, joint=0.99, ttft_bound_s=0.5, target=0.95)
SLO_MISSED = SloStats(ttft=0.62, e2e=0.9, joint=0.558, ttft_bound_s=0.5, e2e_bound_s=4.0,
                      target=0.95)

ENDPOINT_CASES = [
    # (fields, batch capacity, rules, words in the line)
    (dict(running=8.0, waiting=0.0, kv_cache_pct=40.0), None, ("ok",), "ok: KV 40%, 0 waiting"),
    (dict(running=8.0, waiting=3.0, kv_cache_pct=97.0), None, ("kv-cache-full",),
     "KV cache full (97%, 3 waiting)"),
    (dict(running=8.0, waiting=0.0, kv_cache_pct=95.0), None, ("kv-cache-full",), "KV cache full"),
    (dict(running=2.0, waiting=5.0, kv_cache_pct=30.0), 8, ("queue-bound",),
     "queue-bound: 5 waiting while the batch holds 2 of 8"),
    (dict(running=8.0, waiting=5.0, kv_cache_pct=30.0), 8, ("batch-full",),
     "at capacity: batch full (8), 5 waiting"),
    (dict(running=4.0, waiting=2.0, kv_cache_pct=30.0), None, ("queueing",),
     "2 waiting behind 4 running"),
    (dict(running=1.0, waiting=0.0, slo=SLO_MET), None, ("ok",), "ok: 0 waiting, SLO 99%"),
    (dict(running=1.0, waiting=0.0, slo=SLO_MISSED), None, ("slo-missed",),
     "SLO missed: 56% met < 95% (ttft 62% within 0.5 s)"),
    (dict(slo=SloStats(error_rate=0.12, error_rate_met=False, error_rate_bound=0.01)), None,
     ("slo-missed",), "SLO missed: error rate 12.0% > 1.0%"),
    (dict(running=2.0, waiting=5.0, kv_cache_pct=30.0, slo=SLO_MISSED), 8,
     ("queue-bound", "slo-missed"), "queue-bound: 5 waiting while the batch holds 2 of 8; SLO missed"),
    (dict(status="down", reason="refused"), None, ("down",), "not checked: down (refused)"),
    (dict(), None, ("ok",), "ok: nothing reported to check"),
]


@pytest.mark.parametrize("fields, capacity, rules, words", ENDPOINT_CASES)
def test_endpoint_rules(fields, capacity, rules, words):
    found = diagnose_endpoint(endpoint(**fields), capacity)
    assert found.rules == rules and words in found.line, found


GPU_CASES = [
    (dict(), ("ok",), "ok: util 60%, 60 C, 300/700 W, no throttling, mem-bw 30%, mem 50%"),
    (dict(throttle_reasons=("gpu_idle",)), ("ok",), "no throttling"),  # idle is not a slowdown
    (dict(throttle_reasons=("hw_thermal_slowdown",), temperature_c=91.0), ("thermal-throttle",),
     "thermally throttled (hw_thermal_slowdown, 91 C)"),
    (dict(throttle_reasons=("sw_power_cap",), power_w=699.0), ("power-throttle",),
     "power capped (sw_power_cap, 699/700 W)"),
    (dict(throttle_reasons=None, temperature_c=90.0), ("thermal-throttle",),
     "hot (90 C): likely thermally throttled (NVML gave no reasons)"),
    (dict(throttle_reasons=None, power_w=690.0), ("power-throttle",), "at its power limit (690/700 W)"),
    (dict(throttle_reasons=(), temperature_c=90.0), ("ok",), "90 C"),  # NVML says: not slowed
    (dict(memory_utilization_pct=85.0, utilization_pct=97.0), ("memory-bandwidth-bound",),
     "memory-bandwidth bound (memory busy 85% of the time)"),
    (dict(memory_used_bytes=79 * GIB), ("memory-full",), "memory nearly full (99%)"),
    (dict(throttle_reasons=("sw_thermal_slowdown", "sw_power_cap"), memory_utilization_pct=75.0),
     ("thermal-throttle", "power-throttle", "memory-bandwidth-bound"), "thermally throttled"),
]


@pytest.mark.parametrize("fields, rules, words", GPU_CASES)
def test_gpu_rules(fields, rules, words):
    found = diagnose_gpu(gpu(**fields))
    assert found.rules == rules and words in found.line, found


JOB_CASES = [
    ({"step": 40, "max_steps": 100}, 2.0, 95.0, ("ok",), "ok: step 40/100, last step 2 s ago, GPU 95%"),
    ({"step": 40, "max_steps": 100}, 2.0, None, ("ok",), "ok: step 40/100, last step 2 s ago"),
    ({"step": 40}, 400.0, 0.0, ("stalled",), "stalled: no step for 400 s"),
    ({"step": 40}, 1.0, 25.0, ("input-starved",), "starved by its input: GPU only 25% busy"),
    (None, None, None, ("no-progress",), "not checked: no step reported yet"),
    ({"step": 40, "data_wait_pct": 45.0}, 1.0, None, ("input-starved",),
     "starved by its data loader: 45% of the time waiting for batches"),
    ({"step": 40, "data_wait_pct": 12.0}, 1.0, None, ("ok",), "ok: step 40, last step 1 s ago, "
                                                              "data wait 12%"),
]


@pytest.mark.parametrize("progress, since, utilization, rules, words", JOB_CASES)
def test_job_rules(progress, since, utilization, rules, words):
    found = diagnose_job(progress, since, utilization)
    assert found.rules == rules and words in found.line, found


def test_nvml_reason_bits_are_named():
    assert throttle_reasons(None) is None and throttle_reasons(0) == ()
    assert throttle_reasons(0x4 | 0x40) == ("sw_power_cap", "hw_thermal_slowdown")
    assert throttle_reasons(0x1 | 0x80 | 0x100) == ("gpu_idle", "hw_power_brake_slowdown",
                                                     "display_clock_setting")


numbers = st.one_of(st.none(), st.floats(0, 1000, allow_nan=False))
shares = st.one_of(st.none(), st.floats(0, 1))


@settings(max_examples=80, deadline=None)
@given(running=numbers, waiting=numbers, kv=st.one_of(st.none(), st.floats(0, 100)),
       joint=shares, capacity=st.one_of(st.none(), st.integers(1, 512)))
def test_any_endpoint_gets_one_line_and_ok_only_without_findings(running, waiting, kv, joint,
                                                                 capacity):
    slo = SloStats(ttft=joint, joint=joint, ttft_bound_s=0.5, target=0.9) if joint is not None else None
    found = diagnose_endpoint(endpoint(running=running, waiting=waiting, kv_cache_pct=kv, slo=slo),
                              capacity)
    assert "\n" not in found.line and found.rules
    troubled = (kv is not None and kv >= 95) or bool(waiting) or (joint is not None and joint < 0.9)
    assert (found.rules == ("ok",)) == (not troubled), found
    assert found.line.startswith("ok: ") == (found.rules == ("ok",))


@settings(max_examples=80, deadline=None)
@given(utilization=numbers, busy=st.one_of(st.none(), st.floats(0, 100)),
       temperature=numbers, power=numbers,
       reasons=st.one_of(st.none(), st.lists(st.sampled_from(
           ["gpu_idle", "sw_power_cap", "hw_slowdown", "sw_thermal_slowdown"]), max_size=3)))
def test_any_gpu_gets_one_line(utilization, busy, temperature, power, reasons):
    found = diagnose_gpu(gpu(utilization_pct=utilization, memory_utilization_pct=busy,
                             temperature_c=temperature, power_w=power,
                             throttle_reasons=tuple(reasons) if reasons is not None else None))
    assert "\n" not in found.line and found.rules
    slowed = reasons is not None and bool(set(reasons) - {"gpu_idle"})
    if slowed:
        assert {"thermal-throttle", "power-throttle"} & set(found.rules)
