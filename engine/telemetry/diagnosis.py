"""A one-line diagnosis per endpoint, per GPU and per training job, from pure rules over what a
snapshot says now (no history, no I/O): what limits it or what is wrong, or "ok" with the
numbers that were checked, so "nothing obviously wrong" says what "nothing" covered.

Rules and thresholds (each a constant below, each covered by tests/telemetry/test_diagnosis.py):
- endpoint: KV cache full (>= KV_FULL_PCT); queue-bound (requests waiting while the batch has
  room: needs the batch capacity, which only the caller can know) or, capacity unknown, waiting
  behind the running batch; at capacity (waiting with a full batch); SLO missed (the share that
  met every bound below the [slo] target, or the error rate above its bound).
- GPU: thermally throttled or power capped (NVML's clock event reasons; without them, the
  temperature and the power against its limit); memory-bandwidth bound (the memory controller
  busy >= MEMORY_BUSY_PCT of the time); memory nearly full (>= MEMORY_FULL_FRACTION).
- training job: stalled (no step for STALLED_S); starved by its input (its GPU busy less than
  STARVED_GPU_PCT while it trains: the data loader does not keep up).
Several matches join with "; ", the most pressing first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from engine.snapshots import Diagnosis, EndpointSnapshot, GpuDevice, SloStats

KV_FULL_PCT = 95.0
MEMORY_BUSY_PCT = 70.0
MEMORY_FULL_FRACTION = 0.97
HOT_C = 87.0  # without throttle reasons: hot enough that the clocks are likely pulled down
POWER_LIMIT_FRACTION = 0.98
STALLED_S = 300.0
STARVED_GPU_PCT = 40.0
STARVED_DATA_WAIT_PCT = 30.0  # of the wall time between two logs, waiting for the next batches
THERMAL_REASONS = ("sw_thermal_slowdown", "hw_thermal_slowdown", "hw_slowdown")
POWER_REASONS = ("sw_power_cap", "hw_power_brake_slowdown")

Finding = tuple[str, str]  # (rule, words)


def _result(findings: list[Finding], checked: list[str]) -> Diagnosis:
    if not findings:
        return Diagnosis("ok: " + (", ".join(checked) or "nothing reported to check"), ("ok",))
    return Diagnosis("; ".join(words for _, words in findings),
                     tuple(rule for rule, _ in findings))


def _pct(value: float) -> str:
    return f"{value:.0f}%"


# ---- endpoints -------------------------------------------------------------------------------


def diagnose_endpoint(endpoint: EndpointSnapshot, batch_capacity: int | None = None) -> Diagnosis:
    """`batch_capacity`: the most sequences the server batches, when it says
    (modeldeck's server exports `modeldeck_max_num_seqs`; vLLM does not export max-num-seqs,
    so its endpoints read None and a queue there is only `queueing`)."""
    if endpoint.status not in ("up", "degraded"):
        return Diagnosis(f"not checked: {endpoint.status}"
                         + (f" ({endpoint.reason})" if endpoint.reason else ""), (endpoint.status,))
    findings: list[Finding] = []
    checked: list[str] = []
    findings += _queue_findings(endpoint, batch_capacity, checked)
    findings += _slo_findings(endpoint.slo, checked)
    return _result(findings, checked)


def _queue_findings(endpoint: EndpointSnapshot, capacity: int | None,
                    checked: list[str]) -> list[Finding]:
    waiting, running, kv = endpoint.waiting, endpoint.running, endpoint.kv_cache_pct
    if kv is not None:
        checked.append(f"KV {_pct(kv)}")
    if waiting is not None:
        checked.append(f"{waiting:.0f} waiting")
    queued = f", {waiting:.0f} waiting" if waiting else ""
    if kv is not None and kv >= KV_FULL_PCT:
        return [("kv-cache-full", f"KV cache full ({_pct(kv)}{queued})")]
    if not waiting:
        return []
    running_now = running or 0.0
    if capacity is None:
        return [("queueing", f"{waiting:.0f} waiting behind {running_now:.0f} running "
                             "(batch limit reached, or admission stalls)")]
    if running_now >= capacity:
        return [("batch-full", f"at capacity: batch full ({capacity}), {waiting:.0f} waiting")]
    return [("queue-bound", f"queue-bound: {waiting:.0f} waiting while the batch holds "
                            f"{running_now:.0f} of {capacity}")]


def _slo_findings(slo: SloStats | None, checked: list[str]) -> list[Finding]:
    if slo is None:
        return []
    if slo.error_rate_met is False and slo.error_rate is not None:
        return [("slo-missed", f"SLO missed: error rate {slo.error_rate:.1%} > "
                               f"{slo.error_rate_bound or 0:.1%}")]
    if slo.joint is None:
        return []
    target = slo.target if slo.target is not None else 0.95
    checked.append(f"SLO {_pct(slo.joint * 100)}")
    if slo.joint >= target:
        return []
    shares = [(share, name, bound) for name, share, bound in (
        ("ttft", slo.ttft, slo.ttft_bound_s), ("itl", slo.itl, slo.itl_bound_s),
        ("e2e", slo.e2e, slo.e2e_bound_s)) if share is not None and bound is not None]
    worst = f" ({min(shares)[1]} {_pct(min(shares)[0] * 100)} within {min(shares)[2]:g} s)" \
        if shares else ""
    return [("slo-missed", f"SLO missed: {_pct(slo.joint * 100)} met < {_pct(target * 100)}{worst}")]


# ---- GPUs ------------------------------------------------------------------------------------


def diagnose_gpu(device: GpuDevice) -> Diagnosis:
    findings: list[Finding] = []
    checked: list[str] = []
    findings += _throttle_findings(device, checked)
    busy = device.memory_utilization_pct
    if busy is not None:
        checked.append(f"mem-bw {_pct(busy)}")
        if busy >= MEMORY_BUSY_PCT:
            findings.append(("memory-bandwidth-bound", f"memory-bandwidth bound (memory busy "
                                                       f"{_pct(busy)} of the time)"))
    used, total = device.memory_used_bytes, device.memory_total_bytes
    if used is not None and total:
        checked.append(f"mem {_pct(100 * used / total)}")
        if used / total >= MEMORY_FULL_FRACTION:
            findings.append(("memory-full", f"memory nearly full ({_pct(100 * used / total)})"))
    if device.utilization_pct is not None:
        checked.insert(0, f"util {_pct(device.utilization_pct)}")
    return _result(findings, checked)


def _throttle_findings(device: GpuDevice, checked: list[str]) -> list[Finding]:
    reasons, temperature = device.throttle_reasons, device.temperature_c
    power, limit = device.power_w, device.power_limit_w
    if temperature is not None:
        checked.append(f"{temperature:.0f} C")
    if power is not None:
        checked.append(f"{power:.0f}" + (f"/{limit:.0f} W" if limit else " W"))
    findings: list[Finding] = []
    if reasons is not None:
        checked.append("no throttling" if not _slowing(reasons) else "throttle reasons")
        thermal = [reason for reason in reasons if reason in THERMAL_REASONS]
        power_capped = [reason for reason in reasons if reason in POWER_REASONS]
        if thermal:
            findings.append(("thermal-throttle", f"thermally throttled ({', '.join(thermal)}"
                             + (f", {temperature:.0f} C)" if temperature is not None else ")")))
        if power_capped:
            findings.append(("power-throttle", f"power capped ({', '.join(power_capped)}"
                             + (f", {power:.0f}/{limit:.0f} W)" if power and limit else ")")))
        return findings
    if temperature is not None and temperature >= HOT_C:
        findings.append(("thermal-throttle", f"hot ({temperature:.0f} C): likely thermally "
                                             "throttled (NVML gave no reasons)"))
    if power is not None and limit and power >= POWER_LIMIT_FRACTION * limit:
        findings.append(("power-throttle", f"at its power limit ({power:.0f}/{limit:.0f} W)"))
    return findings


def _slowing(reasons: tuple[str, ...]) -> bool:
    return any(reason in THERMAL_REASONS + POWER_REASONS for reason in reasons)


# ---- training jobs ---------------------------------------------------------------------------


def diagnose_job(progress: Mapping[str, Any] | None, seconds_since_step: float | None,
                 gpu_utilization_pct: float | None = None) -> Diagnosis:
    """A running job from its newest `progress` event (engine.training.callback), the seconds
    since that event, and the utilization of the GPU it trains on (None: on the CPU, or not
    known). Starvation is read from the share of each step the trainer spent waiting for its
    next batches (`data_wait_pct`), or, from a job that does not report it, from the GPU
    waiting on its input while the job steps."""
    findings: list[Finding] = []
    checked: list[str] = []
    if progress is None:
        return Diagnosis("not checked: no step reported yet", ("no-progress",))
    step, steps = progress.get("step"), progress.get("max_steps")
    if step is not None:
        checked.append(f"step {step}" + (f"/{steps}" if steps else ""))
    if seconds_since_step is not None:
        checked.append(f"last step {seconds_since_step:.0f} s ago")
        if seconds_since_step >= STALLED_S:
            findings.append(("stalled", f"stalled: no step for {seconds_since_step:.0f} s"))
    waiting = progress.get("data_wait_pct")
    if isinstance(waiting, (int, float)) and math.isfinite(waiting):
        checked.append(f"data wait {_pct(waiting)}")
        if waiting >= STARVED_DATA_WAIT_PCT and not findings:
            findings.append(("input-starved", f"starved by its data loader: {_pct(waiting)} of "
                                              "the time waiting for batches"))
    if gpu_utilization_pct is not None:
        checked.append(f"GPU {_pct(gpu_utilization_pct)}")
        if gpu_utilization_pct < STARVED_GPU_PCT and not findings:
            findings.append(("input-starved", f"starved by its input: GPU only "
                                              f"{_pct(gpu_utilization_pct)} busy while training "
                                              "(data loader too slow?)"))
    return _result(findings, checked)
