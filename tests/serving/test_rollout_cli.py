"""`modeldeck rollout` as a user runs it: bad input refused before anything is written, the eval
gate before any traffic, and a server killed mid-rollout (a real detached process)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_modeldeck, stop_leftover_server
from tests.serving.test_server_lifecycle import deck_listing, free_port, one_line_error


@pytest.fixture(scope="module")
def tiny_model_dir_worse(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model_dir with its output layer scaled 20x: the same guesses made with far more
    confidence, so its perplexity on any held-out text is much worse."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    destination = tmp_path_factory.mktemp("models-worse") / "tiny-llama"
    model.save_pretrained(destination)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(destination)
    return destination


@pytest.fixture
def home(deck_home, cli, tiny_model_dir, tiny_model_dir_distinct, tiny_model_dir_worse):
    """tiny@1 deployed; tiny@2 (different answers), tiny@3 (tiny@1's weights) and tiny@4
    (worse perplexity) imported."""
    for source in (tiny_model_dir, tiny_model_dir_distinct, tiny_model_dir, tiny_model_dir_worse):
        assert cli("models", "import", str(source), "--name", "tiny").code == 0
    assert cli("deploy", "tiny@1", "--no-start", "--yes").code == 0
    (deck_home / "deck.toml").write_text(f'[serve]\ndtype = "float32"\nport = {free_port()}\n')
    yield deck_home
    stop_leftover_server(deck_home)


BAD = [(("tiny@2", "--shadow", "150%"), 2, "--shadow must be at most 100"),
       (("tiny@2", "--shadow", "lots"), 2, "--shadow must be a number"),
       (("tiny@2", "--hold", "5x"), 2, "--hold must be a duration"),
       (("tiny@2", "--steps", "5,50"), 2, "--steps must end at 100"),
       (("tiny@2", "--steps", "50,25,100"), 2, "--steps must increase"),
       (("tiny@2", "--min-requests", "0"), 2, "--min-requests must be at least 1"),
       (("tiny@9",), 2, "tiny@9 does not exist"),
       (("tiny@1",), 2, "tiny@1 is already deployed"),
       (("tiny@2", "--target", "nowhere"), 2, "unknown target"),
       (("status", "--steps", "5,100"), 2, "--steps applies to starting a rollout"),
       (("tiny@2",), 1, "the local server is not running"),
       (("pause",), 1, "the local server is not running")]


def test_bad_input_is_one_line_and_writes_nothing(home, cli):
    before = deck_listing(home)
    for arguments, code, message in BAD:
        result = cli("rollout", *arguments)
        assert result.code == code, (arguments, result)
        assert message in one_line_error(result), (arguments, result)
        assert deck_listing(home) == before, f"rollout {arguments} changed the deck home"
    status = cli("rollout", "status", "--json")
    assert status.code == 0 and status.json["rollout"] is None, status


def test_eval_gate_holds_a_worse_candidate_and_promotes_the_same_weights(home, cli):
    assert run_modeldeck("serve", "--detach", home=home).code == 0
    worse = run_modeldeck("rollout", "tiny@4", "--json", home=home)
    assert worse.code == 1, worse  # REJECT: no rollout started, the verdict audited and stored
    assert "eval gate says REJECT" in one_line_error(worse) and "no traffic sent" in worse.stderr
    assert cli("rollout", "status", "--json").json["rollout"] is None
    held = cli("audit", "--verb", "rollout", "--json").json["entries"][0]
    assert held["result"] == "held" and held["arguments"]["verdict"] == "REJECT"
    shown = run_modeldeck("models", "show", "tiny@4", "--json", home=home)
    assert "rollout_eval" in shown.stdout and '"REJECT"' in shown.stdout, shown
    same = cli("rollout", "tiny@3", "--hold", "600", "--json")
    assert same.code == 0, same
    assert same.json["eval"]["verdict"] == "PROMOTE"
    assert same.json["eval"]["candidate_ppl"] == same.json["eval"]["live_ppl"]
    assert cli("rollout", "abort").code == 0
    again = cli("rollout", "tiny@3", "--hold", "600", "--json")
    assert again.code == 0 and again.json["eval"]["cached"] is True, again
    assert cli("rollout", "abort").code == 0
    forced = cli("rollout", "tiny@4", "--force", "--hold", "600", "--json")
    assert forced.code == 0 and forced.json["rollout"]["status"] == "running", forced
    overridden = cli("audit", "--verb", "rollout-force", "--json").json["entries"][0]
    assert overridden["arguments"]["verdict"] == "REJECT"
    assert cli("rollout", "abort").code == 0


def test_a_server_killed_mid_rollout_restarts_on_the_live_version(home, cli):
    started = run_modeldeck("serve", "--detach", "--json", home=home)
    assert started.code == 0, started
    begun = run_modeldeck("rollout", "tiny@2", "--force", "--steps", "50,100", "--hold", "600",
                          "--json", home=home)
    assert begun.code == 0, begun
    url = started.json["url"]
    with httpx.Client(base_url=url, timeout=60) as client:
        sides = {client.post("/v1/completions", json={"model": "tiny", "prompt": "Hi",
                                                      "max_tokens": 1}).headers[
            "x-modeldeck-version"] for _ in range(8)}
    assert sides == {"tiny@1", "tiny@2"}  # the candidate took traffic at 50%
    os.kill(started.json["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(started.json["pid"], 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    restarted = run_modeldeck("serve", "--detach", "--json", home=home)
    assert restarted.code == 0, restarted
    assert httpx.get(f"{restarted.json['url']}/health").json()["version"] == "tiny@1"
    status = run_modeldeck("rollout", "status", "--json", home=home)
    assert status.json["rollout"]["status"] == "interrupted", status
    history = cli("history", "--json").json["entries"]
    assert (history[0]["action"], history[0]["version"], history[0]["outcome"]) == (
        "rollout", 2, "interrupted")
    audit = cli("audit", "--verb", "rollout", "--json").json["entries"][0]
    assert audit["result"] == "interrupted" and audit["history_id"] == history[0]["id"]
    deployment = json.loads(run_modeldeck("status", "--json", home=home).stdout)
    assert "tiny@1" in json.dumps(deployment) and "interrupted" not in json.dumps(deployment)
    assert run_modeldeck("serve", "--stop", home=home).code == 0
