"""Training and rollout subjects built from real job event streams and run/rollout.json, and the
default rules firing on them."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from engine.alert_settings import JOB_FIELDS, ROLLOUT_FIELDS, SUBJECT_FIELDS
from engine.jobs import append_event, record_state
from engine.paths import DeckPaths
from engine.snapshots import GpuDevice, GpuSnapshot, TelemetrySnapshot
from engine.telemetry.alerts.service import AlertService
from engine.telemetry.alerts.subjects import JobWatcher, rollout_subjects

NOW = time.time()  # the stream's state events carry the real time


def make_job(paths: DeckPaths, job_id: str, losses: list[float], evals: list[float] = (),
             state: str = "running", reason: str | None = None, last_step_at: float = NOW) -> Path:
    directory = paths.jobs / job_id
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps({"id": job_id, "kind": "finetune",
                                                     "created_at": NOW - 1000}))
    record_state(directory, "running")
    for step, loss in enumerate(losses, 1):
        append_event(directory, "progress", step=step, max_steps=100, loss=loss, grad_norm=1.0,
                     t=last_step_at - len(losses) + step)
    for loss in evals:
        append_event(directory, "eval", eval_loss=loss)
    if state != "running":
        record_state(directory, state, reason)
    return directory


def job_fields(paths: DeckPaths, now: float = NOW) -> dict[str, dict]:
    return {subject.id: subject.derived for subject in JobWatcher(paths).subjects(now)}


def test_job_fields_say_what_the_training_rules_need(tmp_path: Path):
    paths = DeckPaths(tmp_path)
    make_job(paths, "spike", [2.0, 1.9, 1.8, 1.7, 1.6, 6.0], evals=[1.5, 1.4, 1.7])
    make_job(paths, "diverged", [2.0], state="failed", reason="TrainingDiverged: loss became nan at step 2")
    make_job(paths, "stalled", [2.0, 1.9], last_step_at=NOW - 900)
    make_job(paths, "improving", [2.0], evals=[1.5, 1.2])
    fields = job_fields(paths)
    assert math.isclose(fields["improving"]["eval_loss_regression"], 1.2 / 1.5)
    assert set(fields["spike"]) == set(JOB_FIELDS) == SUBJECT_FIELDS["job"]
    spike = fields["spike"]
    assert spike["loss_average"] == 1.8 and math.isclose(spike["loss_spike_ratio"], 6.0 / 1.8)
    assert spike["eval_loss_best"] == 1.4 and math.isclose(spike["eval_loss_regression"], 1.7 / 1.4)
    assert spike["non_finite"] is False and spike["seconds_since_step"] == 0
    assert fields["diverged"]["non_finite"] is True and fields["diverged"]["seconds_since_step"] is None
    assert fields["stalled"]["seconds_since_step"] == 900 and fields["stalled"]["loss_spike_ratio"] is None


def test_an_ended_job_stops_being_a_subject_after_an_hour(tmp_path: Path):
    paths = DeckPaths(tmp_path)
    make_job(paths, "done", [1.0], state="finished")
    watcher = JobWatcher(paths)
    assert [s.id for s in watcher.subjects(NOW)] == ["done"]
    assert watcher.subjects(time.time() + 3601) == [] and watcher.done == {"done"}


def test_rollout_fields(tmp_path: Path):
    paths = DeckPaths(tmp_path)
    assert rollout_subjects(paths, NOW) == []
    paths.run.mkdir(parents=True)
    paths.rollout_state.write_text(json.dumps({"id": "r1", "model": "tiny", "version": 2,
                                               "live": "tiny@1", "status": "failed",
                                               "failed_gate": {"gate": "ttft_p95", "ok": False},
                                               "updated_at": NOW - 10}))
    [subject] = rollout_subjects(paths, NOW)
    assert set(subject.derived) == set(ROLLOUT_FIELDS)
    assert (subject.derived["candidate"], subject.derived["failed_gate"],
            subject.derived["seconds_since_update"]) == ("tiny@2", "ttft_p95", 10)


def test_default_rules_fire_on_training_and_rollout_trouble(tmp_path: Path):
    paths = DeckPaths(tmp_path)
    now = time.time()
    make_job(paths, "spike", [2.0, 1.9, 1.8, 1.7, 1.6, 6.0], evals=[1.5, 1.4, 1.7], last_step_at=now)
    make_job(paths, "diverged", [2.0], state="failed", reason="loss became inf at step 2",
             last_step_at=now)
    make_job(paths, "stalled", [2.0], last_step_at=now - 900)
    paths.rollout_state.parent.mkdir(parents=True, exist_ok=True)
    paths.rollout_state.write_text(json.dumps({"id": "r1", "status": "failed", "updated_at": now}))
    service = AlertService(paths, (), exclusive=False)
    fired = {(r["rule"], r["subject"]) for r in service.observe(
        TelemetrySnapshot(now, GpuSnapshot("no-nvml")))}
    assert fired == {("loss-spike", "job:spike"), ("eval-loss-regression", "job:spike"),
                     ("training-non-finite", "job:diverged"), ("training-stalled", "job:stalled"),
                     ("rollout-gate-tripped", "rollout:r1")}


def test_the_default_xid_rule_fires_on_a_gpu_that_raised_one(tmp_path: Path):
    now = time.time()
    gpus = GpuSnapshot("ok", devices=(GpuDevice(0, xid_errors=0), GpuDevice(1, xid_errors=2,
                                                                             last_xid=79),
                                      GpuDevice(2)))  # 2: no NVML events, nothing to say
    service = AlertService(DeckPaths(tmp_path), (), exclusive=False)
    fired = {(r["rule"], r["subject"]) for r in service.observe(TelemetrySnapshot(now, gpus))}
    assert fired == {("gpu-xid", "gpu:1")}
