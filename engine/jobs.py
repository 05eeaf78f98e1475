"""Long work (fine-tuning, compression, ...) as detached jobs with an append-only event stream.

A job is a directory, jobs/<id>/:
  spec.json      what to run: {"id", "kind", "created_at", "entry", "launch", "spec"}
  events.jsonl   append-only, one JSON object a line (state changes, progress, results)
  state.json     the latest state only, rewritten atomically: what `status` reads cheaply
  pid            the supervisor's pid (it leads its own session, so its group is the job)
  log            the processes' stdout and stderr
  checkpoints/   whatever the worker wants to resume from
  control/       requests to a running worker (stop, checkpoint), one file each, taken once
  tensorboard/   TensorBoard event files of the job's training runs

This module is the caller side: start, read, follow, cancel and resume jobs. `start_job` spawns
`python -m engine.jobs supervise <dir>` with start_new_session, so closing the terminal or the SSH
session does not stop it. What runs in there (the supervisor, the worker `python -m engine.jobs
run <dir>`, JobContext) is engine.job_worker; its names are re-exported here, so engine.jobs
stays the one import path for callers and the one module path for the job's processes.

Nothing here imports torch: `status` and the console read jobs cheaply.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from engine.errors import ActionFailed, BadInput
from engine.paths import DeckPaths
from engine.fsutil import write_atomically
from engine.procs import process_alive
# The detached side, re-exported: callers, tests and `python -m engine.jobs` reach it from here.
from engine.job_worker import (CONTROL_ACTIONS, JOB_STATES, TERMINAL_STATES, JobCancelled,
                               JobContext, JobLaunch, append_event, main, record_state,
                               run_worker, take_control_requests, worker_device)
from engine.job_worker import _worker_command as _worker_command  # tests check its command line
from engine.job_worker import read_json as _read_json

if TYPE_CHECKING:
    from engine.deck import Deck

Where = Union["Deck", DeckPaths]  # every public function takes a Deck or its DeckPaths

# kind -> "module:function". Another engineer adds a kind here (or passes entry= to start_job).
WORKER_ENTRIES: dict[str, str] = {
    "finetune": "engine.actions.jobs:run_finetune_job",  # trains, then deploy-if-better
    "compress": "engine.compression.worker:run_compress",
    "selftest": "engine.jobs:_selftest_worker",
}
CANCEL_GRACE_S = 10.0
CONTROLLABLE_KINDS = ("finetune", "compress")
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobInfo:
    id: str
    kind: str
    state: str
    reason: str | None
    created_at: float
    updated_at: float
    pid: int | None
    directory: str
    spec: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    attempt: int = 1

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tensorboard_dir": str(Path(self.directory) / "tensorboard")}


# ---- reading the event stream ----------------------------------------------------------------


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines from byte `offset`; returns them and the offset to read from next time.

    A line still being written (no newline yet) is left for the next call.
    """
    try:
        with (job_dir / "events.jsonl").open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            events.append(json.loads(raw))
        except ValueError:
            continue  # a torn line from a crash mid-write; the stream goes on after it
    return events, offset + end


def follow_events(where: Where, job_id: str, poll_s: float = 0.5,
                  offset: int = 0) -> Iterator[dict[str, Any]]:
    """Yield events as they are appended, until the job is in a terminal state."""
    job_dir = job_directory(where, job_id)
    while True:
        events, offset = read_events(job_dir, offset)
        yield from events
        if not events and get_job(where, job_id).terminal:
            events, offset = read_events(job_dir, offset)  # what landed before the last state
            yield from events
            return
        if not events:
            time.sleep(poll_s)


def loss_curve(events: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, loss) for the loss pane; a resumed attempt overrides the steps it repeats."""
    by_step: dict[int, float] = {}
    for event in events:
        if event.get("type") == "progress" and event.get("loss") is not None:
            by_step[int(event["step"])] = float(event["loss"])
    return sorted(by_step.items())


# ---- reading jobs ----------------------------------------------------------------------------


def deck_paths_of(where: Where) -> DeckPaths:
    return where if isinstance(where, DeckPaths) else where.paths


def job_directory(where: Where, job_id: str) -> Path:
    directory = deck_paths_of(where).job(job_id)  # one validator for ids that become paths
    if not (directory / "spec.json").exists():
        raise BadInput(f"job {job_id!r} does not exist")
    return directory


def get_job(where: Where, job_id: str) -> JobInfo:
    return _job_from_dir(job_directory(where, job_id))


def list_jobs(where: Where, kind: str | None = None) -> list[JobInfo]:
    paths = deck_paths_of(where).check_home()
    if not paths.jobs.exists():
        return []
    jobs = [_job_from_dir(d) for d in paths.jobs.iterdir() if (d / "spec.json").exists()]
    return sorted((j for j in jobs if kind is None or j.kind == kind), key=lambda j: j.created_at)


def job_counts(where: Where) -> dict[str, int]:
    """Jobs by state, from the small state files only (what `status` shows)."""
    paths = deck_paths_of(where).check_home()
    counts = {state: 0 for state in JOB_STATES}
    if paths.jobs.exists():
        for directory in paths.jobs.iterdir():
            state, _ = _effective_state(directory, _read_json(directory / "state.json") or {})
            if state in counts:
                counts[state] += 1
    return counts


def _job_from_dir(directory: Path) -> JobInfo:
    spec = _read_json(directory / "spec.json") or {}
    snapshot = _read_json(directory / "state.json") or {}
    state, reason = _effective_state(directory, snapshot)
    return JobInfo(id=directory.name, kind=spec.get("kind", "?"), state=state, reason=reason,
                   created_at=spec.get("created_at", 0.0),
                   updated_at=snapshot.get("updated_at", spec.get("created_at", 0.0)),
                   pid=_read_pid(directory), directory=str(directory), spec=spec.get("spec", {}),
                   result=snapshot.get("result"), attempt=int(snapshot.get("attempt", 1)))


def _effective_state(directory: Path, snapshot: dict[str, Any]) -> tuple[str, str | None]:
    """A job that says it is live but whose supervisor is gone (SIGKILL, reboot) has failed."""
    state = snapshot.get("state", "queued")
    if state in TERMINAL_STATES:
        return state, snapshot.get("reason")
    pid = _read_pid(directory)
    if pid is None:
        started = snapshot.get("updated_at") or (directory / "spec.json").stat().st_mtime
        if time.time() - started < 30:  # just created: the supervisor is starting
            return state, snapshot.get("reason")
        return "failed", "worker never started"
    if not process_alive(pid):
        return "failed", f"worker process {pid} is gone (killed or crashed); `jobs resume` continues it"
    return state, snapshot.get("reason")


def _read_pid(directory: Path) -> int | None:
    try:
        return int((directory / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


# ---- starting, cancelling, resuming ----------------------------------------------------------


def new_job_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def start_job(where: Where, kind: str, spec: dict[str, Any], *,
              launch: JobLaunch = JobLaunch(), entry: str | None = None,
              device: str | None = None) -> JobInfo:
    """Write the job directory and spawn its detached supervisor. `spec` must be JSON-able.
    `device` (a validated device name) pins the worker to that GPU (see worker_environment)."""
    entry = entry or WORKER_ENTRIES.get(kind)
    if entry is None:
        raise BadInput(f"unknown job kind {kind!r} (known: {', '.join(sorted(WORKER_ENTRIES))})")
    document = {"kind": kind, "created_at": time.time(), "entry": entry,
                "launch": asdict(launch), "device": device, "spec": spec}
    paths = deck_paths_of(where)
    worker_environment(document, os.environ, paths.home)  # a device it cannot pin: BadInput now
    paths.ensure()
    job_id = new_job_id(kind)
    directory = paths.jobs / job_id
    (directory / "checkpoints").mkdir(parents=True)
    document = {"id": job_id, **document}
    (directory / "spec.json").write_text(json.dumps(document, indent=2, default=str))
    record_state(directory, "queued", "created", attempt=1)
    _spawn_supervisor(paths, directory)
    return _job_from_dir(directory)


def worker_environment(document: dict[str, Any], inherited: Mapping[str, str],
                       home: Path) -> dict[str, str]:
    """The supervisor's environment, which its worker (and torchrun's workers) inherit: the deck,
    this engine's code first on the path, and for a job on cuda:N, CUDA_VISIBLE_DEVICES naming
    that GPU, so the worker's "cuda" is GPU N (a Trainer would otherwise take cuda:0)."""
    env = {**inherited, "MODELDECK_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                      env.get("PYTHONPATH")]))
    return {**env, **pinned_environment(document.get("device"), inherited)}


def pinned_environment(device: str | None, inherited: Mapping[str, str]) -> dict[str, str]:
    """The entries a job worker for `device` needs: cuda:N -> CUDA_VISIBLE_DEVICES naming GPU N.
    N counts the GPUs this process sees, so under an inherited CUDA_VISIBLE_DEVICES=2,3, cuda:1
    is GPU 3. The device was validated against the machine (engine.validate.parse_device)."""
    if not device or not device.startswith("cuda:"):
        return {}
    index = int(device.partition(":")[2])
    visible = [entry.strip() for entry in inherited.get(VISIBLE_DEVICES, "").split(",")
               if entry.strip()]
    if VISIBLE_DEVICES in inherited and index >= len(visible):
        raise BadInput(f"device {device}: {VISIBLE_DEVICES}={inherited[VISIBLE_DEVICES]!r} "
                       f"leaves {len(visible)} CUDA device(s) visible")
    return {VISIBLE_DEVICES: visible[index] if visible else str(index)}


def _spawn_supervisor(paths: DeckPaths, directory: Path) -> None:
    env = worker_environment(_read_json(directory / "spec.json") or {}, os.environ, paths.home)
    with (directory / "log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.jobs", "supervise", str(directory)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=directory, start_new_session=True, close_fds=True)
    (directory / "pid").write_text(str(process.pid))


def cancel_job(where: Where, job_id: str, reason: str = "cancelled by user",
               grace_s: float = CANCEL_GRACE_S) -> JobInfo:
    """SIGTERM the job's process group, SIGKILL it after `grace_s`, and record `cancelled`."""
    job = get_job(where, job_id)
    if job.terminal:
        raise BadInput(f"job {job_id} is already {job.state}")
    directory = Path(job.directory)
    (directory / "cancel").write_text(reason)
    if job.pid is not None:
        _stop_group(job.pid, grace_s)
    recorded = (_read_json(directory / "state.json") or {}).get("state")
    if recorded not in TERMINAL_STATES:  # the worker did not get to record it
        record_state(directory, "cancelled", reason)
    return get_job(where, job_id)


def _stop_group(pid: int, grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.05)


def request_control(where: Where, job_id: str, action: str) -> JobInfo:
    """Ask a running training worker to stop early or to checkpoint now: a file under control/
    that its callback takes after the current step (the work stays in the worker's process)."""
    job = get_job(where, job_id)
    if action not in CONTROL_ACTIONS:
        raise BadInput(f"unknown job request {action!r} (known: {', '.join(CONTROL_ACTIONS)})")
    if job.kind not in CONTROLLABLE_KINDS:
        raise BadInput(f"job {job_id} is a {job.kind} job: only training jobs take {action}")
    if job.state != "running":
        raise BadInput(f"job {job_id} is {job.state}: only a running job can {action}")
    control = Path(job.directory) / "control"
    control.mkdir(exist_ok=True)
    write_atomically(control / action, json.dumps({"requested_at": time.time()}))
    append_event(Path(job.directory), "control_requested", action=action)
    return job


def resume_job(where: Where, job_id: str) -> JobInfo:
    """Start a failed or cancelled job again; its worker continues from its checkpoints."""
    paths = deck_paths_of(where)
    job = get_job(paths, job_id)
    if job.state == "finished":
        raise BadInput(f"job {job_id} already finished")
    if not job.terminal:
        raise BadInput(f"job {job_id} is still {job.state} (pid {job.pid})")
    directory = Path(job.directory)
    snapshot = _read_json(directory / "state.json") or {}
    if snapshot.get("state") not in TERMINAL_STATES:  # it died without saying so: say it now
        record_state(directory, "failed", job.reason)
    (directory / "cancel").unlink(missing_ok=True)
    take_control_requests(directory)  # a request the dead attempt never took is not for this one
    record_state(directory, "queued", "resumed", attempt=job.attempt + 1)
    _spawn_supervisor(paths, directory)
    return get_job(paths, job_id)


# ---- the selftest kind: a torch-free worker for testing the machinery ------------------------


def _selftest_worker(context: JobContext) -> dict[str, Any]:
    """A torch-free worker for testing the machinery: counts steps, honours `fail`/`sleep_s`."""
    steps = int(context.spec.get("steps", 3))
    marker = context.checkpoints / "step"
    start = int(marker.read_text()) if marker.exists() else 0
    for step in range(start + 1, steps + 1):
        time.sleep(float(context.spec.get("sleep_s", 0.0)))
        context.emit("progress", step=step, max_steps=steps, loss=1.0 / step)
        write_atomically(marker, str(step))  # a kill mid-write must not leave an empty marker
        if context.spec.get("fail_at") == step:
            raise ActionFailed(f"asked to fail at step {step}")
    return {"steps": steps, "started_at_step": start}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
