"""A `modeldeck` target honours its own [targets.gate]: after the remote swapped (behind its own
gate), the target's prompts run against the remote's /v1 as clients reach it. A latency bound no
answer can meet fails the gate, and the remote goes back to the version it served before.
Two deck homes on loopback, the remote running a real `modeldeck serve`."""

from __future__ import annotations


import httpx
import pytest

from tests.conftest import run_modeldeck
from tests.targets.remote_decks import start_remote_deck

TARGET = ('[[targets]]\nname = "edge"\nkind = "modeldeck"\nurl = "{url}"\n'
          'api_key_file = "{token}"\ntimeout_s = 120\n[targets.gate]\nprompts = ["Hello"]\n{bound}')


@pytest.fixture
def decks(tmp_path, tiny_model_dir, tiny_model_dir_b):
    remote, local = tmp_path / "remote", tmp_path / "local"
    url = start_remote_deck(remote, tiny_model_dir)["url"]
    for source in (tiny_model_dir, tiny_model_dir_b):
        assert run_modeldeck("models", "import", str(source), "--name", "tiny", home=local).code == 0
    config = tmp_path / "deck.toml"

    def configure(bound: str) -> None:
        config.write_text(TARGET.format(url=url, token=remote / "run" / "control.token", bound=bound))

    yield {"local": local, "url": url, "configure": configure,
           "env": {"MODELDECK_CONFIG": str(config)}}
    run_modeldeck("serve", "--stop", home=remote, timeout=120)


def served(decks: dict) -> str:
    return httpx.get(f"{decks['url']}/health", timeout=10).json()["version"]


def push(decks: dict, ref: str):
    return run_modeldeck("deploy", ref, "--target", "edge", "--yes", home=decks["local"],
                         env=decks["env"], timeout=300)


def test_an_unmeetable_latency_bound_fails_the_gate_and_the_remote_goes_back(decks):
    decks["configure"]("max_latency_s = 60\n")
    first = push(decks, "tiny@1")
    assert first.code == 0, first
    before = served(decks)  # the remote numbers pushed versions itself
    decks["configure"]("max_latency_s = 0.000001\n")  # no answer over HTTP is this fast
    failed = push(decks, "tiny@2")
    assert failed.code == 1, failed
    assert "slower than the 1e-06s bound" in failed.stderr and "rolled back to tiny@1" in failed.stderr
    assert served(decks) == before  # the remote itself went back
    history = run_modeldeck("history", "--target", "edge", "--json", home=decks["local"],
                            env=decks["env"]).json["entries"]
    assert [(e["action"], e["version"], e["outcome"]) for e in history[:2]] == [
        ("auto-rollback", 1, "ok"), ("deploy", 2, "failed")]
    decks["configure"]("max_latency_s = 60\n")  # a bound it meets: the same version passes
    again = push(decks, "tiny@2")
    assert again.code == 0, again
    assert served(decks).startswith("tiny@") and served(decks) != before
