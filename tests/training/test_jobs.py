"""The generic job machinery with the torch-free `selftest` worker: detached start, events,
failure reasons, cancel, death detection and resume."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine import jobs
from engine.errors import BadInput
from tests.training.training_helpers import wait_terminal


def wait_for_step(deck, job_id: str, step: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    directory = jobs.job_directory(deck, job_id)
    while time.monotonic() < deadline:
        events, _ = jobs.read_events(directory)
        if any(e.get("step", 0) >= step for e in events if e["type"] == "progress"):
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached step {step}")


def states(deck, job_id: str) -> list[str]:
    events, _ = jobs.read_events(jobs.job_directory(deck, job_id))
    return [e["state"] for e in events if e["type"] == "state"]


def test_job_runs_detached_and_finishes(deck):
    job = jobs.start_job(deck, "selftest", {"steps": 3})
    assert job.state in ("queued", "running")
    done = wait_terminal(deck, job.id)
    assert done.state == "finished" and done.result == {"steps": 3, "started_at_step": 0}
    assert states(deck, job.id) == ["queued", "running", "finished"]
    # its supervisor led its own session: closing our terminal would not have reached it
    assert os.getsid(os.getpid()) != done.pid
    events = list(jobs.follow_events(deck, job.id, poll_s=0.01))
    assert [s for _, s in jobs.loss_curve(events)] == [1.0, 0.5, 1.0 / 3]
    assert jobs.job_counts(deck)["finished"] == 1


def test_failure_records_the_reason(deck):
    job = jobs.start_job(deck, "selftest", {"steps": 5, "fail_at": 2})
    done = wait_terminal(deck, job.id)
    assert done.state == "failed" and "asked to fail at step 2" in done.reason


def test_cancel_stops_the_worker(deck):
    job = jobs.start_job(deck, "selftest", {"steps": 10_000, "sleep_s": 0.02})
    wait_for_step(deck, job.id, 2)
    cancelled = jobs.cancel_job(deck, job.id, grace_s=10)
    assert cancelled.state == "cancelled"
    assert not jobs.process_alive(cancelled.pid)
    with pytest.raises(BadInput):
        jobs.cancel_job(deck, job.id)


def test_sigkill_is_detected_and_resume_continues(deck):
    job = jobs.start_job(deck, "selftest", {"steps": 60, "sleep_s": 0.05})
    wait_for_step(deck, job.id, 3)
    os.killpg(job.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while jobs.process_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    dead = jobs.get_job(deck, job.id)
    assert dead.state == "failed" and "gone" in dead.reason
    checkpoint = int((Path(dead.directory) / "checkpoints" / "step").read_text())
    resumed = jobs.resume_job(deck, job.id)
    assert resumed.attempt == 2
    done = wait_terminal(deck, job.id)
    assert done.state == "finished" and done.result["started_at_step"] == checkpoint
    assert states(deck, job.id)[-4:] == ["failed", "queued", "running", "finished"]


def test_unknown_job_and_kind_are_bad_input(deck):
    with pytest.raises(BadInput):
        jobs.get_job(deck, "nope")
    with pytest.raises(BadInput):
        jobs.start_job(deck, "no-such-kind", {})


def test_read_events_leaves_a_partial_line(tmp_path: Path):
    (tmp_path / "events.jsonl").write_text('{"type": "a"}\n{"type": "b"')
    events, offset = jobs.read_events(tmp_path)
    assert [e["type"] for e in events] == ["a"] and offset == len('{"type": "a"}\n')
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write("}\n")
    events, _ = jobs.read_events(tmp_path, offset)
    assert [e["type"] for e in events] == ["b"]


def test_cancel_right_after_start_never_runs_the_worker(deck):
    job = jobs.start_job(deck, "selftest", {"steps": 1000, "sleep_s": 0.05})
    cancelled = jobs.cancel_job(deck, job.id)
    assert cancelled.state == "cancelled"
    assert states(deck, job.id)[-1] == "cancelled"
    assert not any(e["type"] == "progress" and e["step"] > 50
                   for e in jobs.read_events(jobs.job_directory(deck, job.id))[0])


def test_torchrun_command_for_several_machines(tmp_path: Path):
    single = jobs._worker_command(tmp_path, jobs.JobLaunch())
    assert single[1:4] == ["-m", "engine.jobs", "run"]
    launch = jobs.JobLaunch(nproc=4, nnodes=2, rdzv_endpoint="10.0.0.1:29400", node_rank=1)
    command = jobs._worker_command(tmp_path, launch)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nproc-per-node=4", "--nnodes=2", "--rdzv-backend=c10d",
            "--rdzv-endpoint=10.0.0.1:29400", "--node-rank=1"} <= set(command)
    assert "--standalone" in jobs._worker_command(tmp_path, jobs.JobLaunch(nproc=2))
    assert command[-4:] == ["--module", "engine.jobs", "run", str(tmp_path)]
