"""`modeldeck rollout --target REMOTE` end to end on loopback: two deck homes, the remote one
running a real `modeldeck serve`. The local deck pushes the candidate and the remote server's
own controller ramps it; status, pause, resume and abort steer it through this deck, which
records the rollout's end in its history and audit. Other target kinds are refused."""

from __future__ import annotations

import time

import httpx
import pytest

from engine.serving.rollout import RolloutState
from tests.conftest import run_modeldeck
from tests.targets.remote_decks import start_remote_deck
from tests.serving.test_rollout_cli import tiny_model_dir_worse  # noqa: F401 (a fixture)
from tests.serving.test_server_lifecycle import deck_listing, one_line_error

MAX_LOAD_REQUESTS = 200
MAX_RAMP_SECONDS = 20


@pytest.fixture(scope="module")
def decks(tmp_path_factory, tiny_model_dir, tiny_model_dir_worse):  # noqa: F811
    """The remote serves its own tiny@1; the local deck holds tiny@1 and tiny@2 (the same
    weights, so the eval gate says PROMOTE) and tiny@3 (far worse perplexity: REJECT), and has
    deployed its tiny@1 to `edge`."""
    root = tmp_path_factory.mktemp("remote-rollout")
    remote, local = root / "remote", root / "local"
    url = start_remote_deck(remote, tiny_model_dir)["url"]
    for source in (tiny_model_dir, tiny_model_dir, tiny_model_dir_worse):
        assert run_modeldeck("models", "import", str(source), "--name", "tiny", home=local).code == 0
    config = root / "deck.toml"
    # latency_floor_s: a 2-core box's noise must not fail a gate; sent from here, not the remote's
    config.write_text(f'[rollout]\nlatency_floor_s = 5.0\n\n'
                      f'[[targets]]\nname = "edge"\nkind = "modeldeck"\nurl = "{url}"\n'
                      f'api_key_file = "{remote / "run" / "control.token"}"\ntimeout_s = 120\n\n'
                      '[[targets]]\nname = "lora"\nkind = "vllm-lora"\nurl = "http://127.0.0.1:9"\n'
                      f'lora_dir = "{root / "loras"}"\n\n'
                      '[[targets]]\nname = "box"\nkind = "command"\nurl = "http://127.0.0.1:9"\n'
                      'deploy_command = ["true"]\n')
    env = {"MODELDECK_CONFIG": str(config)}
    deployed = run_modeldeck("deploy", "tiny@1", "--target", "edge", "--yes", home=local, env=env,
                             timeout=300)
    assert deployed.code == 0, deployed
    yield {"remote": remote, "local": local, "url": url, "env": env,
           "token": (remote / "run" / "control.token").read_text().strip()}
    run_modeldeck("serve", "--stop", home=remote, timeout=120)


def local_deck(decks: dict, *args: str):
    return run_modeldeck(*args, home=decks["local"], env=decks["env"], timeout=300)


def served(decks: dict) -> str:
    return httpx.get(f"{decks['url']}/health", timeout=10).json()["version"]


def remote_state(client: httpx.Client) -> dict:
    return client.post("/control/rollout/status", json={}).json()["rollout"]


def test_other_target_kinds_are_refused_in_one_line_writing_nothing(decks):
    before = deck_listing(decks["local"])
    for arguments, message in [(("tiny@2", "--target", "lora"), "'lora' is a vllm-lora target"),
                               (("tiny@2", "--target", "box"), "'box' is a command target"),
                               (("status", "--target", "box"), "'box' is a command target"),
                               (("abort", "--target", "lora"), "'lora' is a vllm-lora target"),
                               (("pause", "--target", "nowhere"), "unknown target 'nowhere'"),
                               (("tiny@1", "--target", "edge"), "tiny@1 is already deployed")]:
        result = local_deck(decks, "rollout", *arguments)
        assert result.code == 2, (arguments, result)
        assert message in one_line_error(result), (arguments, result)
        assert deck_listing(decks["local"]) == before, f"rollout {arguments} wrote to the deck"


def test_the_eval_gate_holds_a_worse_candidate_before_anything_is_pushed(decks):
    remote_versions = run_modeldeck("models", "list", "--json", home=decks["remote"]).json
    held = local_deck(decks, "rollout", "tiny@3", "--target", "edge")
    assert held.code == 1, held
    assert "eval gate says REJECT" in one_line_error(held) and "no traffic sent" in held.stderr
    assert run_modeldeck("models", "list", "--json", home=decks["remote"]).json == remote_versions
    audit = local_deck(decks, "audit", "--verb", "rollout", "--json").json["entries"][0]
    assert (audit["result"], audit["arguments"]["target"]) == ("held", "edge")


def test_pause_resume_and_abort_through_the_target(decks):
    live = served(decks)
    begun = local_deck(decks, "rollout", "tiny@2", "--target", "edge", "--hold", "600", "--json")
    assert begun.code == 0, begun
    assert begun.json["eval"]["verdict"] == "PROMOTE"
    assert begun.json["rollout"]["status"] == "running" and begun.json["rollout"]["live"] == live
    assert begun.json["rollout"]["settings"]["latency_floor_s"] == 5.0  # this deck's settings
    paused = local_deck(decks, "rollout", "pause", "--target", "edge", "--json")
    assert paused.code == 0 and paused.json["rollout"]["status"] == "paused", paused
    resumed = local_deck(decks, "rollout", "resume", "--target", "edge", "--json")
    assert resumed.code == 0 and resumed.json["rollout"]["status"] == "running", resumed
    aborted = local_deck(decks, "rollout", "abort", "--target", "edge", "--json")
    assert aborted.code == 0, aborted
    # the same shape as for the local server: the controller's state, no eval for a command
    assert (aborted.json["kind"], aborted.json["eval"]) == ("rollout", None)
    assert set(aborted.json["rollout"]) == {*RolloutState.__dataclass_fields__, "candidate"}
    assert aborted.json["rollout"]["status"] == "aborted" and aborted.json["rollout"]["weight"] == 0
    assert served(decks) == live
    again = local_deck(decks, "rollout", "status", "--target", "edge", "--json")
    assert again.json["rollout"]["id"] == begun.json["rollout"]["id"]
    history = local_deck(decks, "history", "--target", "edge", "--json").json["entries"]
    assert [(e["action"], e["version"], e["outcome"]) for e in history[:2]] == [
        ("rollout", 2, "aborted"), ("deploy", 1, "ok")]  # recorded once, though asked twice
    nothing = local_deck(decks, "rollout", "pause", "--target", "edge")
    assert nothing.code == 1 and "no rollout is in progress" in one_line_error(nothing)


def test_a_rollout_ramps_to_promoted_on_the_remote_server(decks):
    live = served(decks)
    begun = local_deck(decks, "rollout", "tiny@2", "--target", "edge", "--steps", "50,100",
                       "--hold", "200ms", "--min-requests", "1", "--json")
    assert begun.code == 0, begun
    candidate = begun.json["rollout"]["candidate"]
    assert candidate != live
    answered: list[str] = []
    headers = {"X-Modeldeck-Token": decks["token"]}
    with httpx.Client(base_url=decks["url"], headers=headers, timeout=60) as client:
        deadline = time.monotonic() + MAX_RAMP_SECONDS
        while remote_state(client)["status"] == "running":
            assert time.monotonic() < deadline and len(answered) < MAX_LOAD_REQUESTS, answered
            response = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hi",
                                                            "max_tokens": 2, "temperature": 0})
            assert response.status_code == 200, response.text
            answered.append(response.headers["x-modeldeck-version"])
    status = local_deck(decks, "rollout", "status", "--target", "edge", "--json")
    assert status.json["rollout"]["status"] == "promoted", status
    assert [step["step"] for step in status.json["rollout"]["steps"]] == ["50%", "100%"]
    assert candidate in answered and served(decks) == candidate
    remote_history = run_modeldeck("history", "--json", home=decks["remote"]).json["entries"]
    assert (remote_history[0]["action"], remote_history[0]["outcome"]) == ("rollout", "ok")
    history = local_deck(decks, "history", "--target", "edge", "--json").json["entries"]
    assert (history[0]["action"], history[0]["version"], history[0]["outcome"]) == (
        "rollout", 2, "ok")
    again = local_deck(decks, "rollout", "tiny@2", "--target", "edge")
    assert again.code == 2 and "tiny@2 is already deployed to edge" in one_line_error(again)
