"""Deploy and roll back on `local` while requests keep flowing: the gated hot swap."""

from __future__ import annotations

import time

import httpx
import pytest

from engine import actions
from engine.errors import ActionFailed
from tests.serving.client_threads import ClientThreads

PROMPT = "Once upon a time"
MAX_TOKENS = 6


def ask(client, stream: bool) -> tuple[str, str, str]:
    """(version header, body model field, text) of one request."""
    arguments = dict(model="tiny", prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    if not stream:
        raw = client.completions.with_raw_response.create(**arguments)
        completion = raw.parse()
        return raw.headers["x-modeldeck-version"], completion.model, completion.choices[0].text
    with client.completions.with_streaming_response.create(stream=True, **arguments) as response:
        chunks = list(response.parse())
        models = {chunk.model for chunk in chunks}
        assert len(models) == 1
        return (response.headers["x-modeldeck-version"], models.pop(),
                "".join(chunk.choices[0].text for chunk in chunks))


class Load(ClientThreads):
    """Client threads sending requests until stopped; every outcome is recorded."""

    def __init__(self, client, threads: int = 3) -> None:
        super().__init__(self._loop, threads)
        self.client, self.results, self.failures = client, [], []

    def _loop(self, index: int) -> None:
        count = 0
        while not self.stopping.is_set():
            try:
                self.results.append(ask(self.client, stream=(index + count) % 2 == 0))
            except Exception as error:  # any failure at all is what this test looks for
                self.failures.append(repr(error))
            count += 1

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < count and time.monotonic() < deadline and not self.failures:
            time.sleep(0.02)


def test_deploy_and_rollback_under_load_drop_nothing(running):
    deck, client = running.deck, running.openai()
    expected = {"tiny@1": ask(client, stream=False)[2]}
    with Load(client) as load:
        load.wait_for(5)
        deployed = actions.deploy(deck, actions.DeployRequest("tiny@2", reason="under load"))
        expected["tiny@2"] = ask(client, stream=False)[2]
        load.wait_for(len(load.results) + 6)
        rolled = actions.rollback(deck, actions.RollbackRequest(reason="back"))
        assert ask(client, stream=False)[0] == "tiny@1"
        load.wait_for(len(load.results) + 6)
    assert load.failures == []
    assert expected["tiny@1"] != expected["tiny@2"]  # the two versions are distinguishable
    versions_seen = {header for header, _, _ in load.results}
    assert versions_seen == {"tiny@1", "tiny@2"}
    for header, body_model, text in load.results:
        assert body_model == header
        assert text == expected[header], "a response mixed versions or came from the wrong one"
    assert deployed.history.outcome == "ok" and rolled.history.outcome == "ok"
    assert deck.registry.deployment("local").state == "active"


@pytest.mark.parametrize("deck_toml", ["[serve.gate]\nmax_latency_s = 0.000001\n"])
def test_failed_gate_keeps_the_old_version_and_rolls_back_the_registry(start_server, cli):
    server = start_server()
    deck = server.deck
    with pytest.raises(ActionFailed, match="slower than .*rolled back to tiny@1"):
        actions.deploy(deck, actions.DeployRequest("tiny@2", reason="too slow"))
    again = cli("deploy", "tiny@2", "--wait", "--yes", "--json")
    assert again.code == 1, again
    assert "gate failed" in again.json["error"]["message"]
    deployment = deck.registry.deployment("local")
    assert (deployment.ref, deployment.state) == ("tiny@1", "active")
    history = deck.registry.history("local")
    assert [(h.action, h.version, h.outcome) for h in history[:4]] == [
        ("auto-rollback", 1, "ok"), ("deploy", 2, "failed")] * 2
    failed_audit = deck.registry.audit(verb="deploy")[0]
    assert failed_audit.result == "failed" and "slower than" in failed_audit.reason
    health = httpx.get(f"{server.url}/health")
    assert health.json()["version"] == "tiny@1"
