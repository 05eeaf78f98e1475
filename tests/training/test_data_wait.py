"""The training callback measures how long the Trainer waits for its next batches (between one
step's end and the next step's start), not counting logging, evaluating or saving, and reports
it as `data_wait_pct` of the time between two logs: the signal the job diagnosis reads for a
trainer starved by its data loader. Driven through the callback hooks in the Trainer's order,
on a fake clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.training import callback as callback_module
from engine.training.callback import JobEventsCallback


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(callback_module.time, "monotonic", fake)
    return fake


def test_data_wait_is_the_share_between_steps_without_logging_or_evaluating(clock):
    emitted: list[tuple[str, dict]] = []
    hooks = JobEventsCallback(lambda kind, **fields: emitted.append((kind, fields)))
    args = SimpleNamespace(world_size=1, device="cpu", per_device_train_batch_size=1,
                           gradient_accumulation_steps=1, eval_strategy="no")
    state = SimpleNamespace(global_step=0, max_steps=10, epoch=0.0, num_input_tokens_seen=0)
    control = SimpleNamespace(should_training_stop=False)
    hooks.on_train_begin(args, state, control)
    for step, (compute_s, loader_s, evaluate_s) in enumerate([(1.0, 3.0, 0.0), (1.0, 1.0, 4.0)]):
        hooks.on_step_begin(args, state, control)
        clock.now += compute_s
        state.global_step = step + 1
        hooks.on_step_end(args, state, control)
        if evaluate_s:
            clock.now += evaluate_s  # an evaluation: not the data loader's time
            hooks.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})
        clock.now += loader_s
    hooks.on_step_begin(args, state, control)
    hooks.on_log(args, state, control, logs={"loss": 2.0})
    progress = next(fields for kind, fields in emitted if kind == "progress")
    # 10 s since training began: 1 + 3 (waiting) + 1 + 4 (evaluating) + 1 (waiting)
    assert progress["data_wait_pct"] == pytest.approx(100 * 4 / 10)
    hooks.on_step_begin(args, state, control)
    clock.now += 2.0
    state.global_step = 3
    hooks.on_step_end(args, state, control)
    hooks.on_log(args, state, control, logs={"loss": 1.9})
    later = [fields for kind, fields in emitted if kind == "progress"][-1]
    assert later["data_wait_pct"] == pytest.approx(0.0)  # counted afresh after each log


def test_jobs_show_diagnoses_a_running_job_starved_by_its_data_loader(deck):
    """`jobs show` (JSON and text) carries the diagnosis of a running job from its newest
    progress event; an ended job has none."""
    import json
    import os

    from console.present import sections_text
    from console.present_jobs import job_report
    from engine import actions
    from engine.jobs import append_event, new_job_id, record_state

    job_id = new_job_id("finetune")
    directory = deck.paths.jobs / job_id
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps({"id": job_id, "kind": "finetune",
                                                     "created_at": 0.0, "spec": {}}))
    (directory / "pid").write_text(str(os.getpid()))  # a live supervisor: this process
    record_state(directory, "running")
    append_event(directory, "progress", step=7, max_steps=100, loss=2.0, data_wait_pct=62.0)
    shown = actions.show_job(deck, job_id)
    assert shown.data["diagnosis"]["rules"] == ["input-starved"]
    text = sections_text(job_report(shown.job.to_dict(), shown.data))
    assert "starved by its data loader: 62% of the time waiting for batches" in text
    assert "data wait" in text and "62%" in text
    record_state(directory, "finished")
    assert actions.show_job(deck, job_id).data["diagnosis"] is None
