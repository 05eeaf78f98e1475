"""The detached side of a job: the processes that `python -m engine.jobs supervise|run <dir>` start.

The supervisor runs the worker (directly, or under torchrun for several processes) and records
`failed` with the exit status if the worker died without saying why. The worker dispatches on the
job's entry to a function `fn(context: JobContext) -> dict | None`; its return value is the job's
result. Here too are the writes both sides share (the event stream's append and the state
snapshot, events.jsonl and state.json), because the detached processes are their main writers.

engine.jobs, the caller side (start, read, follow, cancel, resume), builds on this module and
re-exports its names: callers import them from engine.jobs. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.errors import ActionFailed, DeckError
from engine.fsutil import write_atomically

JOB_STATES = ("queued", "running", "finished", "failed", "cancelled")
TERMINAL_STATES = ("finished", "failed", "cancelled")
# What a running training worker can be asked to do (it polls control/ after every step).
CONTROL_ACTIONS = ("stop", "checkpoint")


class JobCancelled(Exception):
    """Raised inside a worker when the job is cancelled (SIGTERM to its process group)."""


@dataclass(frozen=True)
class JobLaunch:
    """How many processes run the worker: 1 is a plain process, more go through torchrun."""

    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    node_rank: int | None = None

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1


# ---- writing the job directory ---------------------------------------------------------------


def append_event(job_dir: Path, event_type: str, **fields: Any) -> dict[str, Any]:
    """One line, one write, O_APPEND: concurrent writers never interleave inside a line."""
    event = {"t": time.time(), "type": event_type, **fields}
    line = (json.dumps(event, default=str, allow_nan=True) + "\n").encode()
    descriptor = os.open(job_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    return event


def record_state(job_dir: Path, state: str, reason: str | None = None, **fields: Any) -> None:
    """Append the state change and rewrite state.json (temp + rename, so readers see whole files)."""
    if state not in JOB_STATES:
        raise ValueError(f"unknown job state {state!r}")
    event = append_event(job_dir, "state", state=state, reason=reason, **fields)
    previous = read_json(job_dir / "state.json") or {}
    snapshot = {**previous, "state": state, "reason": reason, "updated_at": event["t"], **fields}
    write_atomically(job_dir / "state.json", json.dumps(snapshot, default=str))


def read_json(path: Path) -> dict[str, Any] | None:
    """A job's small JSON file (spec.json, state.json); None when missing, torn or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def take_control_requests(job_dir: Path) -> set[str]:
    """The requests waiting for the worker, each taken (removed) once."""
    taken = set()
    for action in CONTROL_ACTIONS:
        try:
            (job_dir / "control" / action).unlink()
        except FileNotFoundError:
            continue
        taken.add(action)
    return taken


def worker_device(device: str | None) -> str:
    """The device a job worker uses: its pinned GPU is the only one it sees, so cuda:N -> cuda."""
    if not device:
        return "auto"
    return "cuda" if device.startswith("cuda:") else device


# ---- the supervisor --------------------------------------------------------------------------


def _supervise(directory: Path) -> int:
    """Run the worker (or torchrun), then make sure the job ends in a terminal state."""
    document = read_json(directory / "spec.json") or {}
    if (directory / "cancel").exists():  # cancelled before it got going
        if (read_json(directory / "state.json") or {}).get("state") not in TERMINAL_STATES:
            record_state(directory, "cancelled", (directory / "cancel").read_text() or None)
        return 0
    launch = JobLaunch(**document.get("launch", {}))
    command = _worker_command(directory, launch)
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=directory)
    signal.signal(signal.SIGTERM, lambda *_: None)  # the group's SIGTERM is for the worker
    code = child.wait()
    snapshot = read_json(directory / "state.json") or {}
    if snapshot.get("state") not in TERMINAL_STATES:
        if (directory / "cancel").exists():
            record_state(directory, "cancelled", (directory / "cancel").read_text() or None)
        else:
            record_state(directory, "failed", _exit_reason(code))
    return 0


def _exit_reason(code: int) -> str:
    if code < 0:
        return f"worker killed by signal {signal.Signals(-code).name}"
    return f"worker exited with status {code} (see the job's log)"


def _worker_command(directory: Path, launch: JobLaunch) -> list[str]:
    """The worker's command line: `-m engine.jobs run`, the entry point callers have always used."""
    if not launch.distributed:
        return [sys.executable, "-m", "engine.jobs", "run", str(directory)]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.nproc}",
               f"--nnodes={launch.nnodes}"]
    if launch.rdzv_endpoint:
        command += ["--rdzv-backend=c10d", f"--rdzv-endpoint={launch.rdzv_endpoint}"]
    else:
        command += ["--standalone"]
    if launch.node_rank is not None:
        command += [f"--node-rank={launch.node_rank}"]
    return command + ["--module", "engine.jobs", "run", str(directory)]


# ---- the worker ------------------------------------------------------------------------------


@dataclass
class JobContext:
    """What a worker function gets: its spec, where to write, and how to report."""

    job_id: str
    directory: Path
    kind: str
    spec: dict[str, Any]
    home: Path
    attempt: int
    rank: int = 0
    world_size: int = 1
    requested_device: str | None = None  # what the job was started with (cuda:N, cpu, ...)

    @property
    def device(self) -> str:
        """The device this worker uses: cuda:N was pinned by CUDA_VISIBLE_DEVICES, so "cuda"."""
        return worker_device(self.requested_device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoints(self) -> Path:
        return self.directory / "checkpoints"

    def emit(self, event_type: str, **fields: Any) -> None:
        """Rank 0 writes the stream; other ranks stay quiet so the curve is one curve."""
        if self.is_main:
            append_event(self.directory, event_type, **fields)

    @property
    def tensorboard(self) -> Path:
        return self.directory / "tensorboard"

    def cancelled(self) -> bool:
        return (self.directory / "cancel").exists()

    def take_requests(self) -> set[str]:
        """Stop / checkpoint requests; only rank 0 takes them (it tells the other ranks)."""
        return take_control_requests(self.directory) if self.is_main else set()

    def deck(self):
        from engine.deck import Deck

        return Deck.at(self.home)


def _raise_cancelled(*_: Any) -> None:
    raise JobCancelled("cancelled")


def run_worker(directory: Path) -> int:
    """The worker process: dispatch on kind, turn the outcome into the job's terminal state."""
    document = read_json(directory / "spec.json") or {}
    snapshot = read_json(directory / "state.json") or {}
    context = JobContext(job_id=directory.name, directory=directory, kind=document.get("kind", "?"),
                         spec=document.get("spec", {}), home=directory.parent.parent,
                         attempt=int(snapshot.get("attempt", 1)),
                         rank=int(os.environ.get("RANK", 0)),
                         world_size=int(os.environ.get("WORLD_SIZE", 1)),
                         requested_device=document.get("device"))
    signal.signal(signal.SIGTERM, _raise_cancelled)
    if context.is_main:
        record_state(directory, "running", f"attempt {context.attempt}", worker_pid=os.getpid(),
                     world_size=context.world_size)
    try:
        result = _entry_function(document.get("entry", ""))(context)
    except JobCancelled:
        reason = (directory / "cancel").read_text() if (directory / "cancel").exists() else None
        if context.is_main:
            record_state(directory, "cancelled", reason or "cancelled")
        return 1
    except Exception as error:  # every failure becomes a reason on the job, then the exit
        if context.is_main:
            record_state(directory, "failed", _failure_reason(error))
        import traceback

        traceback.print_exc()
        return 1
    if context.is_main:
        record_state(directory, "finished", "done", result=result or {})
    return 0


def _failure_reason(error: Exception) -> str:
    if isinstance(error, DeckError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _entry_function(entry: str) -> Callable[[JobContext], dict[str, Any] | None]:
    module_name, _, function_name = entry.partition(":")
    if not module_name or not function_name:
        raise ActionFailed(f"job has no valid worker entry ({entry!r})")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str]) -> int:
    """`python -m engine.jobs run|supervise JOB_DIR` (engine.jobs hands its argv here)."""
    if len(argv) != 2 or argv[0] not in ("run", "supervise"):
        sys.stderr.write("usage: python -m engine.jobs run|supervise JOB_DIR\n")
        return 2
    directory = Path(argv[1]).resolve()
    return run_worker(directory) if argv[0] == "run" else _supervise(directory)
