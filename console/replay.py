"""Deterministic dashboard data (no clocks, no host names): for the snapshot tests, the Pilot
tests and bench/tui.py, which replays it with a moving `tick` to simulate a busy box."""

from __future__ import annotations

import math

from console.data import (Availability, Curve, DeckInfo, DeploymentRow, EndpointRow, EndpointsPanel,
                          EventRow, EventsPanel, GpuPanel, GpuRow, HostView, JobRow, JobsPanel,
                          LossSeries, ModelRow, ModelsPanel, ProcessRow, Snapshot)
from engine.training.series import RunClock

GIB = 1 << 30
H100_MEMORY = 85_520_809_984  # what NVML reports for an "80GB" H100: 79.6 GiB
EPOCH = 1_767_225_600.0  # 2026-01-01 00:00 UTC: fixed, so snapshots never depend on the clock


def wave(index: int, tick: int, scale: float = 100.0) -> float:
    return round(scale * (0.5 + 0.45 * math.sin((tick + index * 7) / 5.0)), 1)


def gpus(count: int, tick: int = 0) -> GpuPanel:
    rows = tuple(GpuRow(index, "NVIDIA H100 80GB HBM3", wave(index, tick), int((20 + index * 5) * GIB),
                        H100_MEMORY,
                        55.0 + index, 300.0 + 10 * index,
                        tuple(wave(index, tick - back) for back in range(30, 0, -1)),
                        (ProcessRow(4100 + index, "modeldeck-serve", 18 * GIB),),
                        gpu_diagnosis(index, wave(index, tick)))
                 for index in range(count))
    return GpuPanel("ok", "", rows, None)


def gpu_diagnosis(index: int, utilization: float) -> str:
    """What engine.telemetry.diagnosis says of such a GPU (every third one power capped)."""
    if index % 3 == 1:
        return f"power capped (sw_power_cap, {300 + 10 * index}/{310 + 10 * index} W)"
    return (f"ok: util {utilization:.0f}%, {55 + index} C, {300 + 10 * index}/700 W, "
            "no throttling, mem-bw 31%")


def endpoint_diagnosis(status: str, running: int, waiting: int, kv_pct: float) -> str:
    """What engine.telemetry.diagnosis says of such an endpoint."""
    if status == "down":
        return "not checked: down (connection refused)"
    if status == "stale":
        return "not checked: last poll 31 s ago"
    if waiting:
        return (f"{waiting} waiting behind {running} running (batch limit reached, or "
                "admission stalls)")
    return f"ok: KV {kv_pct:.0f}%, 0 waiting, SLO 99%"


def no_gpu() -> GpuPanel:
    host = HostView(37.5, 2, 9 * GIB, 24 * GIB, tuple(wave(0, back) for back in range(24)))
    return GpuPanel("no-nvml", "NVML library not found", (), host)


LOCAL_URL = "http://127.0.0.1:8471"


def endpoints(count: int, tick: int = 0, history: int = 120) -> EndpointsPanel:
    rows = []
    for index in range(count):
        status = ("up", "up", "stale", "down")[index % 4] if count > 1 else "up"
        ttft = 0.120 + 0.01 * index
        latency = () if status == "down" else (
            ("time to first token", round(ttft * 0.7, 3), ttft, round(ttft * 1.4, 3)),
            ("inter-token", 0.031, 0.048, 0.066), ("end to end", 1.9, 2.6, 3.4))
        rows.append(EndpointRow(
            "local" if index == 0 else f"vllm-{index:02d}", "modeldeck" if index == 0 else "vllm",
            status, "connection refused" if status == "down" else "",
            wave(index, tick, 120.0) if status != "down" else None,
            1.5 + index % 3 if status != "down" else None,
            ttft if status != "down" else None, index % 5, index % 3, 40.0 + index % 50,
            tuple(wave(index, tick - back, 120.0) for back in range(history, 0, -1))
            if status != "down" else (),
            LOCAL_URL if index == 0 else f"http://10.0.3.{10 + index}:8000",
            latency, EPOCH + 600 + tick,
            diagnosis=endpoint_diagnosis(status, index % 5, index % 3, 40.0 + index % 50)))
    return EndpointsPanel("ok", "", tuple(rows), window_s=10.0)


def models() -> ModelsPanel:
    rows = (ModelRow("smollm2@4", "smollm2", 4, 541_600_000, "smollm2@1", "ready",
                     (("eval_loss", "3.29"), ("perplexity", "26.9"), ("parent_eval_loss", "3.31")),
                     ("candidate",), ()),
            ModelRow("smollm2@3", "smollm2", 3, 138_544_031, "smollm2@1", "ready",
                     (("Δppl", "+2.9%"), ("speed", "x1.84"), ("size", "x0.26"),
                      ("decode_tokens_per_s", "25.8"), ("perplexity", "28")), ("int8",), ("staging",)),
            ModelRow("smollm2@2", "smollm2", 2, 270_800_000, "smollm2@1", "rejected",
                     (("Δppl", "+54.0%"), ("perplexity", "41.9")), (), ()),
            ModelRow("smollm2@1", "smollm2", 1, 541_600_000, None, "ready",
                     (("perplexity", "27.2"),), ("prod",), ("local",)))
    return ModelsPanel(rows, (DeploymentRow("local", "smollm2@1", "active"),
                              DeploymentRow("staging", "smollm2@3", "active")), ("local", "staging"))


def jobs() -> JobsPanel:
    return JobsPanel("ok", "", (
        JobRow("finetune-20260101-001000-2f182e", "finetune", "smollm2@1", "running", 0.42, 754.0,
               "", EPOCH + 600, 126, 300, 1.82),
        JobRow("compress-20260101-000500-9c01aa", "compress", "smollm2@1", "finished", 1.0, None,
               "", EPOCH + 300, None, None, None, 1, "smollm2@3"),
        JobRow("finetune-20260101-000100-51be07", "finetune", "smollm2@1", "failed", 0.1, None,
               "CUDA out of memory", EPOCH + 60, 30, 300, 2.41)))


def loss(points: int, job_id: str = "finetune-20260101-001000-2f182e",
         tokens_per_step: float = 4096.0, seconds_per_step: float = 2.0,
         start: float = EPOCH + 600) -> LossSeries:
    """A run's loss with a wobble (a fixed pattern, no random numbers), a learning rate and a
    clock (tokens seen, wall time) so every axis of the Loss pane has data."""
    steps = tuple(float(step) for step in range(1, points + 1))
    train = tuple(2.0 / math.sqrt(step) + 0.8 + 0.05 * math.sin(step / 3.0) for step in range(1, points + 1))
    eval_every = max(1, points // 20)
    eval_steps = steps[eval_every - 1::eval_every]
    eval_loss = tuple(2.1 / math.sqrt(step) + 0.85 for step in eval_steps)
    learning_rate = tuple(2e-4 * min(1.0, step / 10) for step in steps)
    clock = RunClock(steps, tuple(step * tokens_per_step for step in steps),
                     tuple(start + step * seconds_per_step for step in steps))
    return LossSeries(job_id, steps, train, eval_steps, eval_loss,
                      max_steps=points + points // 4, eta_s=754.0,
                      signals=(Curve("learning_rate", steps, learning_rate),), clock=clock,
                      checkpoints=(float(eval_steps[len(eval_steps) // 2]),) if eval_steps else ())


def baseline_loss(points: int, job_id: str = "finetune-20251231-220000-9d7e31") -> LossSeries:
    """A second run of the same model to overlay: half the batch, a bit faster a step."""
    return loss(points, job_id, tokens_per_step=2048.0, seconds_per_step=1.2, start=EPOCH - 7200)


GATE_REPORT = ('{"passed": false, "reason": "probe 1 answered http 500", "checks": '
               '[{"name": "probe 1", "passed": false, "status": 500, "latency_s": 0.41}]}')


def events() -> EventsPanel:
    def audit(at: float, level: str, text: str, verb: str, result: str,
              arguments: tuple[tuple[str, str], ...], detail: str = "", reason: str = "") -> EventRow:
        return EventRow(EPOCH + at, level, text, "audit", verb, result, "ops", arguments, detail, reason)

    return EventsPanel((
        audit(900, "error", "deploy smollm2@4 to local: failed (probe 1 answered http 500)",
              "deploy", "failed", (("ref", "smollm2@4"), ("target", "local")), GATE_REPORT,
              "probe 1 answered http 500"),
        audit(840, "info", "deploy smollm2@3 to staging: ok", "deploy", "ok",
              (("ref", "smollm2@3"), ("target", "staging"))),
        audit(600, "info", "fine-tune smollm2@1 job 2f182e: started", "finetune", "started",
              (("job_id", "finetune-20260101-001000-2f182e"), ("parent", "smollm2@1"))),
        audit(420, "info", "compress smollm2@1 (int8) as @3: ok", "compress", "ok",
              (("ref", "smollm2@1"), ("method", "int8"), ("version", "3"))),
        audit(240, "warning", "compress smollm2@1 (prune) as @2: rejected", "compress", "rejected",
              (("ref", "smollm2@1"), ("method", "prune"), ("version", "2"))),
        audit(120, "info", "deploy smollm2@1 to local: ok", "deploy", "ok",
              (("ref", "smollm2@1"), ("target", "local"))),
        audit(0, "info", "import smollm2@1: ok", "import", "ok", (("name", "smollm2"), ("version", "1")))))


def snapshot(gpu_count: int = 2, endpoint_count: int = 4, loss_points: int = 300,
             tick: int = 0, with_gpus: bool = True) -> Snapshot:
    return Snapshot(gpus(gpu_count, tick) if with_gpus else no_gpu(), endpoints(endpoint_count, tick),
                    models(), jobs(), loss(loss_points), events(),
                    Availability(None, None, None, ("bf16", "int8", "prune")),
                    DeckInfo("gpu-box-01", "~/.modeldeck"))
