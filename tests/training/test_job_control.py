"""Acting on a running fine-tuning job (stop early, checkpoint now, register a checkpoint) and
its TensorBoard files, on real jobs with the tiny Llama."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine import actions, jobs
from engine.errors import BadInput
from tests.training.training_helpers import events_of, log_of, wait_for, wait_terminal

# far more steps than the test waits for, and no scheduled checkpoint or eval before them
LONG_RUN = {"method": "full", "steps": 100_000, "batch_size": 2, "checkpoint_every": 50_000,
            "max_length": 32, "eval_split": 0.2, "logging_steps": 1}


def start_long(deck, data: Path) -> jobs.JobInfo:
    return actions.finetune(deck, actions.FinetuneRequest("tiny@1", data, overrides=LONG_RUN)).job


def past_step(step: int):
    return lambda events: any(e["type"] == "progress" and e["step"] >= step for e in events)


@pytest.mark.slow
def test_stop_early_registers_a_version_with_eval_metrics_and_tensorboard(tiny_deck, text_data):
    job = start_long(tiny_deck, text_data)
    wait_for(tiny_deck, job.id, past_step(3))
    actions.stop_job(tiny_deck, actions.JobRequest(job.id, "good enough"))
    done = wait_terminal(tiny_deck, job.id)
    assert done.state == "finished", log_of(done)
    stopped = done.result["stopped_early_at_step"]
    assert 3 <= stopped < 100
    version = tiny_deck.registry.resolve(done.result["version"])
    assert version.ref == "tiny@2" and version.lineage["job_id"] == job.id
    assert version.metrics["eval_loss"] > 0
    assert math.isclose(version.metrics["perplexity"], math.exp(version.metrics["eval_loss"]))
    evals = events_of(tiny_deck, job.id, "eval")
    assert [e["step"] for e in evals] == [stopped]  # evaluated at the step it stopped on
    assert (Path(done.directory) / "checkpoints" / f"checkpoint-{stopped}").is_dir()
    progress = events_of(tiny_deck, job.id, "progress")
    assert all(e["step_time_s"] > 0 and e["memory_bytes"] > 10_000_000 for e in progress[1:])
    _check_tensorboard(Path(done.to_dict()["tensorboard_dir"]), progress, evals)
    with pytest.raises(BadInput, match="finished"):
        actions.stop_job(tiny_deck, actions.JobRequest(job.id))


def _check_tensorboard(directory: Path, progress: list[dict], evals: list[dict]) -> None:
    """tensorboard's own reader finds the losses events.jsonl has, step for step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(directory.glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/step_time_s",
            "train/memory_bytes", "eval/loss"} <= scalars
    train = {s.step: s.value for s in accumulator.Scalars("train/loss")}
    assert train == pytest.approx({e["step"]: e["loss"] for e in progress}, rel=1e-5)
    evaluated = {s.step: s.value for s in accumulator.Scalars("eval/loss")}
    assert evaluated == pytest.approx({e["step"]: e["eval_loss"] for e in evals}, rel=1e-5)


@pytest.mark.slow
def test_checkpoint_now_registers_and_resumes_from_it(tiny_deck, text_data):
    job = start_long(tiny_deck, text_data)
    wait_for(tiny_deck, job.id, past_step(2))
    actions.checkpoint_job(tiny_deck, actions.JobRequest(job.id))
    events = wait_for(tiny_deck, job.id, lambda evs: any(e["type"] == "checkpoint" for e in evs))
    step = next(e["step"] for e in events if e["type"] == "checkpoint")
    assert step < 1000  # the one asked for, not a scheduled one
    assert any(e["type"] == "eval" and e["step"] == step for e in events)  # evaluated there too
    actions.cancel_job(tiny_deck, actions.JobRequest(job.id))
    registered = actions.register_checkpoint(
        tiny_deck, actions.RegisterCheckpointRequest(job.id, step))
    version = tiny_deck.registry.resolve(registered.data["version"])
    assert version.lineage["checkpoint_step"] == step and "job_id" not in version.lineage
    eval_at_step = next(e["eval_loss"] for e in events if e["type"] == "eval" and e["step"] == step)
    assert version.metrics["eval_loss"] == pytest.approx(eval_at_step)
    with pytest.raises(BadInput, match="already"):
        actions.register_checkpoint(tiny_deck, actions.RegisterCheckpointRequest(job.id, step))
    with pytest.raises(BadInput, match="no checkpoint at step"):
        actions.register_checkpoint(tiny_deck, actions.RegisterCheckpointRequest(job.id, step + 1))
    actions.resume_job(tiny_deck, actions.JobRequest(job.id))
    begins = wait_for(tiny_deck, job.id, lambda evs: len([e for e in evs
                                                          if e["type"] == "train_begin"]) == 2)
    assert [e for e in begins if e["type"] == "train_begin"][-1]["resumed_from_step"] == step
    actions.cancel_job(tiny_deck, actions.JobRequest(job.id))
