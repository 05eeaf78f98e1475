"""End to end on loopback: two deck homes, the remote one running a real `modeldeck serve`.
Deploy from one to the other under request load (zero failed requests), a forced gate failure
that rolls back on its own, and an interrupted transfer that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, run_modeldeck
from tests.targets.remote_decks import start_remote_deck

LOAD_CLIENTS = 3
LOAD_MAX_REQUESTS = 150
LOAD_MAX_SECONDS = 120


@pytest.fixture(scope="module")
def broken_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Loads fine, but every weight is NaN: it cannot produce text, so a gate must fail it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    destination = tmp_path_factory.mktemp("broken") / "tiny-nan"
    model.save_pretrained(destination)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(destination)
    return destination


@pytest.fixture(scope="module")
def fresh_model_dir(tmp_path_factory) -> Path:
    from engine.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("fresh") / "tiny", seed=7)


@pytest.fixture
def two_decks(tmp_path, tiny_model_dir, tiny_model_dir_b, broken_model_dir, fresh_model_dir):
    remote, local = tmp_path / "remote", tmp_path / "local"
    server = start_remote_deck(remote, tiny_model_dir)
    for source in (tiny_model_dir, tiny_model_dir_b, broken_model_dir, fresh_model_dir):
        assert run_modeldeck("models", "import", str(source), "--name", "tiny", home=local).code == 0
    config = tmp_path / "deck.toml"
    config.write_text(f'[[targets]]\nname = "edge"\nkind = "modeldeck"\nurl = "{server["url"]}"\n'
                      f'api_key_file = "{remote / "run" / "control.token"}"\ntimeout_s = 120\n')
    yield {"remote": remote, "local": local, "url": server["url"],
           "env": {"MODELDECK_CONFIG": str(config)}}
    run_modeldeck("serve", "--stop", home=remote, timeout=120)


class Load:
    """Bounded request load on the remote server, recording every outcome."""

    def __init__(self, url: str) -> None:
        self.url, self.results, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(LOAD_CLIENTS)]

    def _client(self) -> None:
        deadline = time.monotonic() + LOAD_MAX_SECONDS
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set() and time.monotonic() < deadline \
                    and len(self.results) < LOAD_MAX_REQUESTS:
                try:
                    response = client.post(f"{self.url}/v1/completions", json={
                        "model": "tiny", "prompt": "The river", "max_tokens": 4, "temperature": 0})
                    self.results.append((response.status_code, response.headers.get("x-modeldeck-version")))
                except httpx.HTTPError as error:
                    self.results.append((type(error).__name__, None))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=90)


def served(decks: dict) -> str:
    return httpx.get(f"{decks['url']}/health", timeout=10).json()["version"]


def local_deck(decks: dict, *args: str, env: dict | None = None):
    return run_modeldeck(*args, home=decks["local"], env={**decks["env"], **(env or {})}, timeout=300)


def test_push_deploy_under_load_then_gate_failure_then_resumed_transfer(two_decks, tmp_path):
    decks = two_decks
    # 1. Under load: a version the remote lacks is pushed, registered and swapped in.
    with Load(decks["url"]) as load:
        while len(load.results) < 5:
            time.sleep(0.05)
        deployed = local_deck(decks, "deploy", "tiny@2", "--target", "edge", "--yes", "--json")
        time.sleep(0.5)
    assert deployed.code == 0, deployed
    assert load.results and all(status == 200 for status, _ in load.results), load.results[:5]
    assert {version for _, version in load.results} <= {"tiny@1", "tiny@2"}
    assert served(decks) == "tiny@2"
    shown = run_modeldeck("models", "show", "tiny@2", "--json", home=decks["remote"]).json["model"]
    assert shown["lineage"]["pushed_from"].endswith(":tiny@2")

    # 2. A version that cannot produce text fails the remote gate; both decks roll back.
    failed = local_deck(decks, "deploy", "tiny@3", "--target", "edge", "--yes")
    assert failed.code == 1
    assert "rolled back to tiny@2" in failed.stderr
    assert served(decks) == "tiny@2"
    history = local_deck(decks, "history", "--target", "edge", "--json").json["entries"]
    assert [(e["action"], e["version"], e["outcome"]) for e in history[:2]] == [
        ("auto-rollback", 2, "ok"), ("deploy", 3, "failed")]

    # 3. Kill the sender mid-blob: nothing half-sent is registered; the next deploy resumes.
    remote_versions_before = run_modeldeck("models", "list", "--json", home=decks["remote"]).json
    marker = tmp_path / "paused"
    sender = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "deploy", "tiny@4", "--target", "edge", "--yes"],
        cwd=REPO, env={**os.environ, "MODELDECK_HOME": str(decks["local"]), **decks["env"],
                       "MODELDECK_TEST_PAUSE": "push:mid-blob", "MODELDECK_TEST_PAUSE_FILE": str(marker)})
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert sender.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    assert run_modeldeck("models", "list", "--json", home=decks["remote"]).json == remote_versions_before
    assert served(decks) == "tiny@2"
    resumed = local_deck(decks, "deploy", "tiny@4", "--target", "edge", "--yes", "--json")
    assert resumed.code == 0, resumed
    assert served(decks).startswith("tiny@")
    assert served(decks) != "tiny@2"
    history = local_deck(decks, "history", "--target", "edge", "--json").json["entries"]
    assert [(e["version"], e["outcome"]) for e in history[:2]] == [(4, "ok"), (4, "interrupted")]
