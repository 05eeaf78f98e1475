"""Real fine-tuning jobs on the tiny Llama: each method registers a version with lineage,
NaN fails the job, a SIGKILLed job resumes from its checkpoint, torchrun runs two ranks."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest

from tests.training.training_helpers import events_of, log_of, wait_for, wait_terminal, write_jsonl
from engine import actions, jobs
from engine.errors import BadInput


def start(deck, data: Path, reference: str = "tiny@1", **options) -> jobs.JobInfo:
    overrides = {"steps": 6, "batch_size": 4, "checkpoint_every": 3, "max_length": 64,
                 **options.pop("overrides", {})}
    request = actions.FinetuneRequest(reference, data, overrides=overrides, **options)
    return actions.finetune(deck, request).job


@pytest.mark.slow
@pytest.mark.parametrize("method, data_fixture", [
    ("lora", "text_data"), ("full", "prompt_data"), ("freeze", "chat_data")])
def test_each_method_registers_a_version_with_lineage(tiny_deck, request, method, data_fixture):
    data = request.getfixturevalue(data_fixture)
    job = start(tiny_deck, data, overrides={"method": method, "trainable_layers": 1})
    done = wait_terminal(tiny_deck, job.id)
    assert done.state == "finished", log_of(done)
    version = tiny_deck.registry.resolve(done.result["version"])
    assert version.ref == "tiny@2" and version.parent_version == 1 and version.kind == "model"
    assert version.lineage["parent"] == "tiny@1" and version.lineage["job_id"] == job.id
    assert version.lineage["data_sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
    assert version.lineage["settings"]["method"] == method
    assert math.isclose(version.metrics["perplexity"], math.exp(version.metrics["eval_loss"]))
    progress = events_of(tiny_deck, job.id, "progress")
    assert [e["step"] for e in progress] == [1, 2, 3, 4, 5, 6]
    assert all(e["tokens_per_s"] > 0 and e["learning_rate"] > 0 for e in progress)
    assert events_of(tiny_deck, job.id, "eval") and (Path(done.directory) / "checkpoints").is_dir()
    model = events_of(tiny_deck, job.id, "model")[0]
    assert model["trainable_parameters"] < model["parameters"] or method == "full"
    checkpoint = Path(done.directory) / "checkpoints" / "checkpoint-6"
    assert any(checkpoint.glob("*.safetensors"))


@pytest.mark.slow
def test_keep_adapter_registers_an_adapter_with_its_base(tiny_deck, text_data):
    job = start(tiny_deck, text_data, keep_adapter=True)
    done = wait_terminal(tiny_deck, job.id)
    assert done.state == "finished", log_of(done)
    version = tiny_deck.registry.resolve(done.result["version"])
    assert version.kind == "adapter" and version.lineage["base"] == "tiny@1"
    assert {f.name for f in version.files} >= {"adapter_config.json", "adapter_model.safetensors"}


@pytest.mark.slow
def test_nan_loss_fails_the_job_and_registers_nothing(tiny_deck, text_data):
    # a real divergence: an absurd learning rate blows the weights up within a few steps
    job = start(tiny_deck, text_data, overrides={"method": "full", "learning_rate": 1e30,
                                                 "steps": 20, "max_grad_norm": 0.0})
    done = wait_terminal(tiny_deck, job.id)
    assert done.state == "failed" and "became nan" in done.reason or "became inf" in done.reason, done
    assert [v.ref for v in tiny_deck.registry.versions("tiny")] == ["tiny@1"]


def test_empty_dataset_is_refused_before_any_job(tiny_deck, tmp_path):
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(BadInput, match="no usable rows"):
        start(tiny_deck, empty)
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"text": "ok"}', "{broken"])
    with pytest.raises(BadInput, match=f"{bad}:2:"):
        start(tiny_deck, bad)
    assert jobs.list_jobs(tiny_deck) == []


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_loss_curve(tiny_deck, text_data):
    job = start(tiny_deck, text_data, overrides={"steps": 400, "checkpoint_every": 4,
                                                 "batch_size": 2, "eval_split": 0.0})
    checkpoints = Path(job.directory) / "checkpoints"
    wait_for(tiny_deck, job.id, lambda events: any(checkpoints.glob("checkpoint-8"))
             and any(e.get("step", 0) >= 9 for e in events if e["type"] == "progress"))
    os.killpg(job.pid, signal.SIGKILL)
    while jobs.process_alive(job.pid):
        time.sleep(0.02)
    dead = jobs.get_job(tiny_deck, job.id)
    assert dead.state == "failed" and "gone" in dead.reason
    first = {e["step"]: e["loss"] for e in events_of(tiny_deck, job.id, "progress")}
    last_checkpoint = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    resumed = actions.resume_job(tiny_deck, actions.JobRequest(job.id)).job
    assert resumed.attempt == 2
    # only wait for the curve to continue past the kill point, then stop the long job
    wait_for(tiny_deck, job.id, lambda events: sum(
        1 for e in events if e["type"] == "progress") >= len(first) + 4)
    actions.cancel_job(tiny_deck, actions.JobRequest(job.id))
    events = events_of(tiny_deck, job.id)
    begin = [e for e in events if e["type"] == "train_begin"]
    assert [e["step"] for e in begin] == [0, last_checkpoint]
    second_index = events.index(begin[1])
    second = [e for e in events[second_index:] if e["type"] == "progress"]
    assert second[0]["step"] == last_checkpoint + 1
    # the same data order and RNG state: the repeated steps reproduce the first attempt's losses
    for event in second:
        if event["step"] in first:
            assert math.isclose(event["loss"], first[event["step"]], rel_tol=1e-3), (event, first)
    curve = jobs.loss_curve(events)
    assert [step for step, _ in curve] == list(range(1, len(curve) + 1))


@pytest.mark.slow
def test_cancel_stops_training_and_registers_nothing(tiny_deck, text_data):
    job = start(tiny_deck, text_data, overrides={"steps": 5000, "batch_size": 2})
    wait_for(tiny_deck, job.id, lambda events: any(e["type"] == "progress" for e in events))
    cancelled = actions.cancel_job(tiny_deck, actions.JobRequest(job.id, "test")).job
    assert cancelled.state == "cancelled" and not jobs.process_alive(cancelled.pid)
    assert events_of(tiny_deck, job.id, "state")[-1]["state"] == "cancelled"
    assert [v.ref for v in tiny_deck.registry.versions("tiny")] == ["tiny@1"]


@pytest.mark.slow
def test_torchrun_two_ranks_gloo_register_one_version(tiny_deck, text_data):
    job = start(tiny_deck, text_data, nproc=2, overrides={"steps": 4, "batch_size": 2})
    done = wait_terminal(tiny_deck, job.id)
    assert done.state == "finished", log_of(done)
    reports = [json.loads(p.read_text()) for p in sorted((Path(done.directory) / "ranks").glob("*.json"))]
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world_size"] == 2 and r["steps"] == 4 for r in reports)
    assert reports[0]["pid"] != reports[1]["pid"]
    assert [v.ref for v in tiny_deck.registry.versions("tiny")] == ["tiny@1", "tiny@2"]
    assert events_of(tiny_deck, job.id, "train_begin")[0]["world_size"] == 2
