"""A real session recorded once for the replay tests: `modeldeck record` (a subprocess) while
the deck's local server (a detached process) serves tiny@1 under a small load, a fine-tune job
runs (cancelled at the end), tiny@2 is deployed to the running server, and a remote endpoint
is dead (its port closed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine import actions, jobs
from engine.deck import Deck
from tests.conftest import REPO

CORPUS = REPO / "engine" / "data" / "corpus.txt"
INTERVAL_S = 0.25


@dataclass
class Session:
    home: Path
    file: Path
    job_id: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def deck_toml(server_port: int, dead_port: int) -> str:
    return (f'[serve]\ndtype = "float32"\nport = {server_port}\n\n'
            f'[telemetry]\ninterval_s = {INTERVAL_S}\n\n'
            f'[[endpoints]]\nname = "dead"\nkind = "vllm"\n'
            f'url = "http://127.0.0.1:{dead_port}"\ntimeout_s = 0.5\n')


def wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """One client thread asking the server for a few tokens until stopped."""

    def __init__(self, url: str) -> None:
        self.url, self.stopping, self.answered = url, threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopping.is_set():
                response = client.post(f"{self.url}/v1/completions", json={
                    "model": "tiny", "prompt": "Once upon a time", "max_tokens": 8})
                self.answered += response.status_code == 200
                time.sleep(0.05)

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def record_session(root: Path, tiny_model_dir: Path, tiny_model_dir_b: Path) -> Session:
    home, file = root / "deck", root / "flight.jsonl"
    home.mkdir(parents=True)
    (home / "deck.toml").write_text(deck_toml(free_port(), free_port()))  # the second: closed
    deck = Deck.at(home)
    environment = {**os.environ, "MODELDECK_HOME": str(home), "PYTHONPATH": str(REPO)}
    recorder = None
    try:
        actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
        actions.import_model(deck, actions.ImportRequest(tiny_model_dir_b, "tiny"))
        deck.registry.move_pointer("local", deck.registry.resolve("tiny@1"), action="deploy",
                                   reason="test", arguments={"ref": "tiny@1"})
        recorder = subprocess.Popen([sys.executable, "-m", "console.cli", "record", str(file),
                                     "--interval", str(INTERVAL_S)], cwd=REPO, env=environment,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait(lambda: file.exists() and file.stat().st_size > 0, 60, "the recorder's first line")
        job = actions.finetune(deck, actions.FinetuneRequest("tiny@1", CORPUS, overrides={
            "steps": 5000, "batch_size": 2, "max_length": 32, "eval_split": 0.2})).job
        url = actions.start_server(deck)["url"]  # loads while the job starts: they overlap
        with Load(url) as load:
            wait(lambda: load.answered >= 10, 60, "the server to answer requests")
            wait(lambda: any(event.get("type") == "progress" for event in
                             jobs.read_events(Path(job.directory))[0]), 120, "the job's first step")
            actions.deploy(deck, actions.DeployRequest("tiny@2", "local", reason="replay test"))
            answered = load.answered
            wait(lambda: load.answered >= answered + 5, 60, "requests after the deploy")
        actions.cancel_job(deck, actions.JobRequest(job.id, "replay test"))  # audited too
        wait(lambda: jobs.get_job(deck, job.id).terminal, 60, "the fine-tune job to stop")
        time.sleep(4 * INTERVAL_S)  # the job's end is on a line too
        recorder.send_signal(signal.SIGINT)
        out, err = recorder.communicate(timeout=30)
        assert recorder.returncode == 0, (out, err)
        return Session(home, file, job.id)
    finally:
        if recorder is not None and recorder.poll() is None:
            recorder.kill()
        actions.stop_server(deck)
        deck.close()


def deploy_frame(recording) -> int:
    """The first line that carries the deploy of tiny@2 (its audit row, as recorded)."""
    return next(index for index, row in recording.audit
                if row["verb"] == "deploy" and row["arguments"].get("ref") == "tiny@2")
