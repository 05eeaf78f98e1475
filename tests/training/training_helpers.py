"""Helpers for the fine-tuning tests: dataset writers and job waiters."""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine import jobs

CORPUS = Path(__file__).resolve().parents[2] / "engine" / "data" / "corpus.txt"


def corpus_lines(count: int = 40) -> list[str]:
    lines = [line.strip() for line in CORPUS.read_text().splitlines() if len(line.strip()) > 20]
    return lines[:count]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def wait_terminal(deck, job_id: str, timeout: float = 180) -> jobs.JobInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get_job(deck, job_id)
        if job.terminal:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end in {timeout}s: {jobs.get_job(deck, job_id)}\n"
                         + (Path(jobs.get_job(deck, job_id).directory) / "log").read_text()[-3000:])


def wait_for(deck, job_id: str, predicate, timeout: float = 180) -> list[dict]:
    """Poll the job's events until predicate(events) holds; fail if the job ends first."""
    deadline = time.monotonic() + timeout
    directory = jobs.job_directory(deck, job_id)
    while time.monotonic() < deadline:
        events, _ = jobs.read_events(directory)
        if predicate(events):
            return events
        if jobs.get_job(deck, job_id).terminal:
            raise AssertionError(f"job ended first: {jobs.get_job(deck, job_id)}\n"
                                 + (directory / "log").read_text()[-3000:])
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting on job {job_id}")


def events_of(deck, job_id: str, kind: str | None = None) -> list[dict]:
    events, _ = jobs.read_events(jobs.job_directory(deck, job_id))
    return [e for e in events if kind is None or e["type"] == kind]


def log_of(job: jobs.JobInfo) -> str:
    return (Path(job.directory) / "log").read_text()[-3000:]
