"""`command` targets must check something, must confirm the NEW version serves, and must hand
their secret to the commands and probes without ever showing it.

A real loopback HTTP service that keeps answering the old version stands in for a deployment
whose rollout did not happen; the deploy command is a real process that records what it got."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import run_modeldeck

SECRET = "s3cr3t-gate-token-9f1c"
RECORDER = '''
import json, os, sys
state, version = sys.argv[1], sys.argv[2]
with open(state, "a") as log:
    log.write(json.dumps({"version": version, "has_key": "MODELDECK_TARGET_API_KEY" in os.environ,
                          "key_in_argv": any(os.environ.get("MODELDECK_TARGET_API_KEY", "\\0") in a
                                             for a in sys.argv)}) + "\\n")
if version == "3":  # a command that echoes its secret and fails: the message must not show it
    sys.stderr.write("deploy failed, key was " + os.environ.get("MODELDECK_TARGET_API_KEY", "") + "\\n")
    sys.exit(1)
'''


class StaleService:
    """Answers /health with 200 and version `serving` (header and JSON body), whatever is
    deployed; records the Authorization headers it saw."""

    def __init__(self) -> None:
        self.serving, self.authorizations = "1", []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.authorizations.append(self.headers.get("Authorization"))
                body = json.dumps({"status": "ok", "version": service.serving}).encode()
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Model-Version", f"tiny@{service.serving}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stale(tmp_path, deck_home, tiny_model_dir):
    service = StaleService()
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    calls = tmp_path / "calls.jsonl"
    command = [sys.executable, str(recorder), str(calls), "{version}"]
    config = tmp_path / "deck.toml"
    config.write_text(
        f'[[targets]]\nname = "svc"\nkind = "command"\nhealth_url = "{service.url}/health"\n'
        f'deploy_command = {json.dumps(command)}\napi_key_env = "SVC_TOKEN"\ntimeout_s = 1\n')
    env = {"MODELDECK_CONFIG": str(config), "SVC_TOKEN": SECRET}
    for _ in range(3):
        assert run_modeldeck("models", "import", str(tiny_model_dir), "--name", "tiny",
                             home=deck_home, env=env).code == 0
    yield {"service": service, "env": env, "home": deck_home, "calls": calls, "config": config}
    service.close()


def deck(stale: dict, *args: str):
    return run_modeldeck(*args, home=stale["home"], env=stale["env"])


def test_gate_fails_when_the_old_version_keeps_answering_and_the_secret_stays_hidden(stale):
    outputs = []
    first = deck(stale, "deploy", "tiny@1", "--target", "svc", "--yes", "--json")
    outputs += [first.stdout, first.stderr]
    assert first.code == 0, first
    # the service never switches to 2: a 200 from it is not evidence that tiny@2 serves
    second = deck(stale, "deploy", "tiny@2", "--target", "svc", "--yes")
    outputs += [second.stdout, second.stderr]
    assert second.code == 1, second
    assert "expected tiny@2" in second.stderr and "rolled back to tiny@1" in second.stderr
    history = deck(stale, "history", "--target", "svc", "--json")
    assert [(e["action"], e["version"], e["outcome"]) for e in history.json["entries"]] == [
        ("auto-rollback", 1, "ok"), ("deploy", 2, "failed"), ("deploy", 1, "ok")]
    # a command that prints its secret and fails: the failure is reported without the secret
    third = deck(stale, "deploy", "tiny@3", "--target", "svc", "--yes")
    outputs += [third.stdout, third.stderr]
    assert third.code == 1 and "key was ***" in third.stderr, third
    audit = deck(stale, "audit", "--json")
    listed = deck(stale, "targets", "list", "--json")
    outputs += [history.stdout, audit.stdout, listed.stdout, audit.stderr]
    assert not [output for output in outputs if SECRET in output]
    calls = [json.loads(line) for line in stale["calls"].read_text().splitlines()]
    assert calls and all(call["has_key"] and not call["key_in_argv"] for call in calls)
    assert set(stale["service"].authorizations) == {f"Bearer {SECRET}"}


def test_the_gate_passes_once_the_new_version_answers(stale):
    assert deck(stale, "deploy", "tiny@1", "--target", "svc", "--yes").code == 0
    stale["service"].serving = "2"
    result = deck(stale, "deploy", "tiny@2", "--target", "svc", "--yes", "--json")
    assert result.code == 0, result


def test_a_configured_version_header_is_the_only_evidence(stale):
    config = stale["config"]
    config.write_text(config.read_text() + 'version_header = "X-Served-By"\n')
    result = deck(stale, "deploy", "tiny@1", "--target", "svc", "--yes")
    assert result.code == 1 and "header X-Served-By names no version" in result.stderr, result


def test_a_command_target_with_nothing_to_probe_is_refused(tmp_path, deck_home):
    config = tmp_path / "deck.toml"
    config.write_text('[[targets]]\nname = "blind"\nkind = "command"\n'
                      'deploy_command = ["true"]\n')
    result = run_modeldeck("targets", "list", home=deck_home, env={"MODELDECK_CONFIG": str(config)})
    assert result.code == 2, result
    assert "'blind'" in result.stderr and "url or health_url" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_gate_that_ran_no_check_fails():
    from engine.targets import gate

    report = gate.combine(None, ())
    assert not report.passed and "no check ran" in report.reason


@pytest.mark.parametrize("value, ok", [
    ("3", True), ("tiny@3", True), ("served by tiny@3", True), ("tiny@31", False),
    ("tiny@2", False), ("other-tiny@3", False), ("13", False), ("tiny@3.1", False)])
def test_names_version(value, ok):
    from engine.targets.gate import names_version

    assert names_version(value, "tiny", 3) is ok
