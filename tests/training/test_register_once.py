"""A fine-tuning job registers its version once: a worker killed after it registered but before
it recorded `finished` finds its version on `jobs resume` (by the job id in the lineage) and
reuses it, for the deploy step too."""

from __future__ import annotations

import os
import signal
import time

import pytest

from engine import actions, jobs
from tests.training.training_helpers import events_of, log_of, wait_terminal


@pytest.mark.slow
def test_kill_after_register_then_resume_registers_exactly_one_version(
        tiny_deck, text_data, tmp_path, monkeypatch):
    marker = tmp_path / "paused"
    monkeypatch.setenv("MODELDECK_TEST_PAUSE", "finetune:registered")
    monkeypatch.setenv("MODELDECK_TEST_PAUSE_FILE", str(marker))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    request = actions.FinetuneRequest("tiny@1", text_data, deploy_if_better="local", overrides={
        "method": "full", "learning_rate": 1e-3, "steps": 4, "batch_size": 4,
        "checkpoint_every": 2, "max_length": 64, "eval_file": str(text_data)})
    job = actions.finetune(tiny_deck, request).job
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert not jobs.get_job(tiny_deck, job.id).terminal, log_of(jobs.get_job(tiny_deck, job.id))
        assert time.monotonic() < deadline, "the worker never reached the pause point"
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)  # registered, not yet deployed, not finished
    while jobs.process_alive(job.pid):
        time.sleep(0.02)
    assert [v.ref for v in tiny_deck.registry.versions("tiny")] == ["tiny@1", "tiny@2"]
    assert tiny_deck.registry.deployment("local") is None
    monkeypatch.delenv("MODELDECK_TEST_PAUSE")
    actions.resume_job(tiny_deck, actions.JobRequest(job.id))
    done = wait_terminal(tiny_deck, job.id, timeout=300)
    assert done.state == "finished", log_of(done)
    assert [v.ref for v in tiny_deck.registry.versions("tiny")] == ["tiny@1", "tiny@2"]
    assert done.result["version"] == "tiny@2"
    registered = events_of(tiny_deck, job.id, "registered")
    assert [e.get("reused", False) for e in registered] == [False, True]
    assert done.result["deploy"]["deployed"] is True, done.result["deploy"]
    assert tiny_deck.registry.deployment("local").ref == "tiny@2"
    assert tiny_deck.registry.versions("tiny")[1].lineage["job_id"] == job.id
