"""Deterministic dashboard data (no clocks, no host names): for the snapshot tests, the Pilot
tests and bench/tui.py, which replays it with a moving `tick` to simulate a busy box."""

from __future__ import annotations

import math

from console.data import (Availability, DeploymentRow, EndpointRow, EndpointsPanel, EventRow,
                          EventsPanel, GpuPanel, GpuRow, HostView, JobRow, JobsPanel, LossSeries,
                          ModelRow, ModelsPanel, ProcessRow, Snapshot)

GIB = 1 << 30
EPOCH = 1_767_225_600.0  # 2026-01-01 00:00 UTC: fixed, so snapshots never depend on the clock


def wave(index: int, tick: int, scale: float = 100.0) -> float:
    return round(scale * (0.5 + 0.45 * math.sin((tick + index * 7) / 5.0)), 1)


def gpus(count: int, tick: int = 0) -> GpuPanel:
    rows = tuple(GpuRow(index, "H100 80GB", wave(index, tick), int((20 + index * 5) * GIB), 80 * GIB,
                        55.0 + index, 300.0 + 10 * index,
                        tuple(wave(index, tick - back) for back in range(30, 0, -1)),
                        (ProcessRow(4100 + index, "modeldeck-serve", 18 * GIB),))
                 for index in range(count))
    return GpuPanel("ok", "", rows, None)


def no_gpu() -> GpuPanel:
    host = HostView(37.5, 2, 9 * GIB, 24 * GIB, tuple(wave(0, back) for back in range(24)))
    return GpuPanel("no-nvml", "NVML library not found", (), host)


def endpoints(count: int, tick: int = 0) -> EndpointsPanel:
    rows = []
    for index in range(count):
        status = ("up", "up", "stale", "down")[index % 4] if count > 1 else "up"
        rows.append(EndpointRow(
            "local" if index == 0 else f"vllm-{index:02d}", "modeldeck" if index == 0 else "vllm",
            status, "connection refused" if status == "down" else "",
            wave(index, tick, 120.0) if status != "down" else None, 1.5 + index % 3,
            0.120 + 0.01 * index, index % 5, index % 3, 40.0 + index % 50,
            tuple(wave(index, tick - back, 120.0) for back in range(20, 0, -1))))
    return EndpointsPanel("ok", "", tuple(rows))


def models() -> ModelsPanel:
    rows = (ModelRow("smollm2@3", "smollm2", 3, 270_000_000, "smollm2@1", "ready",
                     (("perplexity", "27.9"),), ("candidate",), ()),
            ModelRow("smollm2@2", "smollm2", 2, 135_000_000, "smollm2@1", "rejected",
                     (("perplexity", "82.1"),), (), ()),
            ModelRow("smollm2@1", "smollm2", 1, 540_000_000, None, "ready",
                     (("perplexity", "28.1"),), ("prod",), ("local",)))
    return ModelsPanel(rows, (DeploymentRow("local", "smollm2@1", "active"),), ("local", "staging"))


def jobs() -> JobsPanel:
    return JobsPanel("ok", "", (
        JobRow("ft-0003", "finetune", "smollm2@1", "running", 0.42, 754.0),
        JobRow("cmp-0002", "compress", "smollm2@1", "done", 1.0, None),
        JobRow("ft-0001", "finetune", "smollm2@1", "failed", 0.1, None, "out of memory")))


def loss(points: int, job_id: str = "ft-0003") -> LossSeries:
    steps = tuple(float(step) for step in range(1, points + 1))
    train = tuple(2.0 / math.sqrt(step) + 0.8 + 0.05 * math.sin(step / 3.0) for step in range(1, points + 1))
    eval_every = max(1, points // 20)
    eval_steps = steps[eval_every - 1::eval_every]
    eval_loss = tuple(2.1 / math.sqrt(step) + 0.85 for step in eval_steps)
    return LossSeries(job_id, steps, train, eval_steps, eval_loss)


def events() -> EventsPanel:
    return EventsPanel((
        EventRow(EPOCH + 120, "info", "ops: deploy ref=smollm2@1 target=local -> ok"),
        EventRow(EPOCH + 60, "warning", "ops: compress ref=smollm2@1 method=int8 -> rejected (perplexity +54)"),
        EventRow(EPOCH, "info", "ops: import name=smollm2 -> ok")))


def snapshot(gpu_count: int = 2, endpoint_count: int = 4, loss_points: int = 300,
             tick: int = 0, with_gpus: bool = True) -> Snapshot:
    return Snapshot(gpus(gpu_count, tick) if with_gpus else no_gpu(), endpoints(endpoint_count, tick),
                    models(), jobs(), loss(loss_points), events(),
                    Availability(None, None, None, ("bf16", "int8", "prune")))
