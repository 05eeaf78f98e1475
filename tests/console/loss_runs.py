"""Two recorded fine-tuning runs of one model (tests/console/fixtures/runs/*/events.jsonl, in the
shape the training callback writes: noisy train loss every 2 steps, eval loss, learning rate,
grad norm, tokens/s, samples/s, step time, memory, checkpoints) read through the console's own
reader, and a dashboard snapshot that shows them: the running job and a finished baseline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from console import replay
from console.data import JobRow, JobsPanel, LossSeries, Snapshot
from console.loss_stream import LossStream
from engine.jobs import read_events

RUNS = Path(__file__).parent / "fixtures" / "runs"
CURRENT = "finetune-20260101-001000-2f182e"
BASELINE = "finetune-20251231-220000-9d7e31"
OTHER_FAMILY = "finetune-20251230-100000-77aa01"


def recorded(job_id: str) -> LossSeries:
    stream = LossStream()
    events, _ = read_events(RUNS / job_id)
    for event in events:
        stream.add(event)
    return stream.series(job_id)


def jobs() -> JobsPanel:
    return JobsPanel("ok", "", (
        JobRow(CURRENT, "finetune", "smollm2@1", "running", 0.8, 126.0, "", replay.EPOCH + 600,
               240, 300, 0.95),
        JobRow(BASELINE, "finetune", "smollm2@1", "finished", 1.0, None, "",
               replay.EPOCH - 7200, 300, 300, 1.0, 1, "smollm2@4"),
        JobRow(OTHER_FAMILY, "finetune", "qwen@1", "finished", 1.0, None, "",
               replay.EPOCH - 90000, 100, 100, 1.3),
        JobRow("finetune-20260101-000100-51be07", "finetune", "smollm2@1", "failed", 0.1, None,
               "CUDA out of memory", replay.EPOCH + 60, 30, 300, 2.41)))


def snapshot() -> Snapshot:
    return replace(replay.snapshot(), jobs=jobs(), loss=recorded(CURRENT),
                   runs=(recorded(BASELINE),))
