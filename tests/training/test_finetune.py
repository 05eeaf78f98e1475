"""Real fine-tuning jobs on the tiny Llama: each method registers a version with lineage,
NaN fails the job, a SIGKILLed job resumes from its checkpoint, torchrun runs two ranks."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import actions, jobs
from engine.errors import BadInput
from tests.conftest import REPO, run_modeldeck
from tests.training.training_helpers import (corpus_lines, events_of, log_of, wait_for,
                                             wait_terminal, write_jsonl)


def start(deck, data: Path, reference: str = "tiny@1", **options) -> jobs.JobInfo:
    overrides = {"steps": 6, "batch_size": 4, "checkpoint_every": 3, "max_length": 64,
                 "eval_split": 0.2,
                 **options.pop("overrides", {})}
    request = actions.FinetuneRequest(reference, data, overrides=overrides, **options)
    return actions.finetune(deck, request).job


BATCH_MODELS = ("m-lora", "m-full", "m-freeze", "m-adapter", "m-nan", "m-cls", "m-deploy", "m-cli",
                "m-cancel", "m-ddp")


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_model_dir):
    """The short jobs of this module, started at once in one deck (one model each), so their
    start-up (importing torch, transformers and peft) overlaps instead of adding up."""
    from engine.deck import Deck

    root = tmp_path_factory.mktemp("batch")
    deck = Deck.at(root / "deck")
    for name in BATCH_MODELS:
        actions.import_model(deck, actions.ImportRequest(tiny_model_dir, name))
    lines = corpus_lines()
    data = {
        "text": write_jsonl(root / "text.jsonl", [{"text": line} for line in lines]),
        "prompt": write_jsonl(root / "pc.jsonl", [
            {"prompt": f"Q: {line[:20]}\nA:", "completion": " " + line[20:]} for line in lines]),
        "chat": write_jsonl(root / "chat.jsonl", [{"messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": line[:20]},
            {"role": "assistant", "content": line[20:]}]} for line in lines]),
        "label": write_jsonl(root / "cls.jsonl", [
            {"text": line, "label": "long" if len(line) > 60 else "short"} for line in lines]),
    }
    saved_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # eight trainers share two cores
    try:
        started = {
            "cancel": start(deck, data["text"], "m-cancel@1", overrides={"steps": 5000, "batch_size": 2}),
            "ddp": start(deck, data["text"], "m-ddp@1", nproc=2, overrides={"steps": 4, "batch_size": 2}),
            "lora": start(deck, data["text"], "m-lora@1", overrides={"method": "lora"}),
            "full": start(deck, data["prompt"], "m-full@1", overrides={"method": "full"}),
            "freeze": start(deck, data["chat"], "m-freeze@1",
                            overrides={"method": "freeze", "trainable_layers": 1}),
            "adapter": start(deck, data["text"], "m-adapter@1", keep_adapter=True),
            # a real divergence: an absurd learning rate blows the weights up within a few steps
            "nan": start(deck, data["text"], "m-nan@1", overrides={
                "method": "full", "learning_rate": 1e30, "steps": 20, "max_grad_norm": 0.0}),
            "cls": start(deck, data["label"], "m-cls@1", overrides={"method": "full"}),
            "deploy": start(deck, data["text"], "m-deploy@1", deploy_if_better="local", overrides={
                "method": "full", "learning_rate": 1e-3, "eval_file": str(data["text"])}),
        }
        cli = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "finetune", "m-cli@1", "--data", str(data["chat"]),
             "--steps", "3", "--method", "lora", "--max-length", "64", "--wait", "--json"],
            env={**os.environ, "MODELDECK_HOME": str(deck.paths.home)}, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        if saved_threads is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = saved_threads
    yield deck, started, data, cli
    cli.kill()
    deck.close()


@pytest.mark.slow
def test_cancel_stops_training_and_registers_nothing(batch):
    deck, started, _, _ = batch
    job = started["cancel"]
    wait_for(deck, job.id, lambda events: any(e["type"] == "progress" for e in events))
    cancelled = actions.cancel_job(deck, actions.JobRequest(job.id, "test")).job
    assert cancelled.state == "cancelled" and not jobs.process_alive(cancelled.pid)
    assert events_of(deck, job.id, "state")[-1]["state"] == "cancelled"
    assert [v.ref for v in deck.registry.versions("m-cancel")] == ["m-cancel@1"]


@pytest.mark.slow
def test_torchrun_two_ranks_gloo_register_one_version(batch):
    deck, started, _, _ = batch
    done = wait_terminal(deck, started["ddp"].id)
    assert done.state == "finished", log_of(done)
    reports = [json.loads(p.read_text()) for p in sorted((Path(done.directory) / "ranks").glob("*.json"))]
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world_size"] == 2 and r["steps"] == 4 for r in reports)
    assert reports[0]["pid"] != reports[1]["pid"]
    assert [v.ref for v in deck.registry.versions("m-ddp")] == ["m-ddp@1", "m-ddp@2"]
    assert events_of(deck, done.id, "train_begin")[0]["world_size"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("method, data_kind", [
    ("lora", "text"), ("full", "prompt"), ("freeze", "chat")])
def test_each_method_registers_a_version_with_lineage(batch, method, data_kind):
    deck, started, data, _ = batch
    job = started[method]
    done = wait_terminal(deck, job.id)
    assert done.state == "finished", log_of(done)
    version = deck.registry.resolve(done.result["version"])
    assert version.ref == f"m-{method}@2" and version.parent_version == 1 and version.kind == "model"
    assert version.lineage["parent"] == f"m-{method}@1" and version.lineage["job_id"] == job.id
    assert version.lineage["data_sha256"] == hashlib.sha256(data[data_kind].read_bytes()).hexdigest()
    assert version.lineage["settings"]["method"] == method
    assert math.isclose(version.metrics["perplexity"], math.exp(version.metrics["eval_loss"]))
    progress = events_of(deck, job.id, "progress")
    assert [e["step"] for e in progress] == [1, 2, 3, 4, 5, 6]
    assert all(e["tokens_per_s"] > 0 and e["learning_rate"] > 0 and e["cpu_s"] > 0 for e in progress)
    assert all(e["eta_s"] is not None and e["samples_per_s"] > 0 for e in progress)
    assert events_of(deck, job.id, "eval")
    model = events_of(deck, job.id, "model")[0]
    assert model["trainable_parameters"] < model["parameters"] or method == "full"
    checkpoint = Path(done.directory) / "checkpoints" / "checkpoint-6"
    assert any(checkpoint.glob("*.safetensors"))
    parent_weights = {f.name: f.sha256 for f in deck.registry.resolve(f"m-{method}@1").files}
    new_weights = {f.name: f.sha256 for f in version.files}
    assert new_weights["model.safetensors"] != parent_weights["model.safetensors"]


@pytest.mark.slow
def test_keep_adapter_registers_an_adapter_with_its_base(batch):
    deck, started, _, _ = batch
    done = wait_terminal(deck, started["adapter"].id)
    assert done.state == "finished", log_of(done)
    version = deck.registry.resolve(done.result["version"])
    assert version.kind == "adapter" and version.lineage["base"] == "m-adapter@1"
    assert {f.name for f in version.files} >= {"adapter_config.json", "adapter_model.safetensors"}


@pytest.mark.slow
def test_nan_loss_fails_the_job_and_registers_nothing(batch):
    deck, started, _, _ = batch
    done = wait_terminal(deck, started["nan"].id)
    assert done.state == "failed" and ("became nan" in done.reason or "became inf" in done.reason), done
    assert [v.ref for v in deck.registry.versions("m-nan")] == ["m-nan@1"]


@pytest.mark.slow
def test_sequence_classification_with_a_label_field(batch):
    deck, started, _, _ = batch
    done = wait_terminal(deck, started["cls"].id)
    assert done.state == "finished", log_of(done)
    version = deck.registry.resolve(done.result["version"])
    assert version.architecture.endswith("ForSequenceClassification")
    assert version.metrics["eval_loss"] > 0 and version.metrics["perplexity"] is None
    config = json.loads((deck.registry.materialize(version) / "config.json").read_text())
    assert sorted(config["label2id"]) == ["long", "short"]


@pytest.mark.slow
def test_deploy_if_better_deploys_when_eval_loss_beats_the_parent(batch):
    deck, started, _, _ = batch
    done = wait_terminal(deck, started["deploy"].id)
    assert done.state == "finished", log_of(done)
    decision = done.result["deploy"]
    parent_loss = events_of(deck, done.id, "parent_eval")[0]["eval_loss"]
    assert done.result["metrics"]["eval_loss"] < parent_loss
    assert decision["deployed"] is True, decision
    assert deck.registry.deployment("local").ref == "m-deploy@2"


@pytest.mark.slow
def test_cli_finetune_wait_json_and_jobs_verbs(batch):
    deck, _, _, cli = batch
    stdout, stderr = cli.communicate(timeout=240)
    assert cli.returncode == 0, stderr
    document = json.loads(stdout)
    assert document["kind"] == "finetune" and document["job"]["state"] == "finished"
    job_id = document["job"]["id"]
    assert document["job"]["result"]["version"] == "m-cli@2" and document["data"]["format"] == "chat"
    home = deck.paths.home
    logs = run_modeldeck("jobs", "logs", job_id, "--follow", "--json", home=home)
    events = [json.loads(line)["event"] for line in logs.stdout.splitlines()]
    assert events[-1]["type"] == "state" and events[-1]["state"] == "finished"
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3]
    listing = run_modeldeck("jobs", "list", "--json", home=home).json
    assert job_id in [j["id"] for j in listing["jobs"]]
    shown = run_modeldeck("jobs", "show", job_id, home=home)
    assert shown.code == 0 and "finished" in shown.stdout and "m-cli@1" in shown.stdout
    again = run_modeldeck("jobs", "resume", job_id, "--json", home=home)
    assert again.code == 2 and "already finished" in again.json["error"]["message"]


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
    # a kill can land mid-save: resume goes back to the newest checkpoint the Trainer finished
    last_checkpoint = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*")
                          if (p / "trainer_state.json").exists())
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


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(tmp_path):
    from engine.training.worker import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((4, True), (8, True), (12, False)):
        directory = tmp_path / f"checkpoint-{step}"
        directory.mkdir()
        (directory / "adapter_model.safetensors").write_bytes(b"")
        if complete:
            (directory / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
