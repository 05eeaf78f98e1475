"""`command` targets with real processes: the deploy command starts a real local service,
the gate probes its health URL, a failed gate rolls back on its own."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_modeldeck

SERVICE = Path(__file__).with_name("service_ctl.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def service(tmp_path, deck_home, tiny_model_dir):
    """A deck with three versions of `tiny` and a command target `svc` that fails version 3."""
    state, port = tmp_path / "service", free_port()
    start = [sys.executable, str(SERVICE), "start", str(state), str(port), "{model}", "{version}",
             "{path}", "--fail-version", "3"]
    config = tmp_path / "deck.toml"
    config.write_text(
        f'[[targets]]\nname = "svc"\nkind = "command"\nurl = "http://127.0.0.1:{port}"\n'
        f'health_url = "http://127.0.0.1:{port}/health"\ndeploy_command = {json.dumps(start)}\n'
        f'rollback_command = {json.dumps(start)}\napi_key_env = "SVC_TOKEN"\ntimeout_s = 2\n'
        f'[targets.gate]\nprompts = ["Hello"]\nsettle_s = 0.5\n')
    env = {"MODELDECK_CONFIG": str(config), "SVC_TOKEN": "s3cr3t-token-value"}
    for _ in range(3):
        assert run_modeldeck("models", "import", str(tiny_model_dir), "--name", "tiny",
                             home=deck_home, env=env).code == 0
    yield {"env": env, "port": port, "state": state, "home": deck_home}
    run_modeldeck_stop(state)


def run_modeldeck_stop(state: Path) -> None:
    import subprocess

    subprocess.run([sys.executable, str(SERVICE), "stop", str(state)], timeout=30)


def serving(service: dict) -> str:
    return httpx.get(f"http://127.0.0.1:{service['port']}/health", timeout=5).json()["version"]


def deck(service: dict, *args: str):
    return run_modeldeck(*args, home=service["home"], env=service["env"])


def test_deploy_runs_the_command_and_passes_the_gate(service):
    result = deck(service, "deploy", "tiny@1", "--target", "svc", "--yes", "--json")
    assert result.code == 0, result
    assert serving(service) == "1"
    call = json.loads((service["state"] / "calls.jsonl").read_text().splitlines()[-1])
    assert call == {"model": "tiny", "version": "1", "path": call["path"], "path_exists": True}
    entry = deck(service, "history", "--target", "svc", "--json").json["entries"][0]
    assert (entry["version"], entry["outcome"]) == (1, "ok")


def test_failed_gate_rolls_back_on_its_own(service):
    assert deck(service, "deploy", "tiny@2", "--target", "svc", "--yes").code == 0
    failed = deck(service, "deploy", "tiny@3", "--target", "svc", "--yes")
    assert failed.code == 1
    assert "gate failed" in failed.stderr and "status 500" in failed.stderr
    assert "rolled back to tiny@2" in failed.stderr
    assert serving(service) == "2"  # the rollback command really ran
    history = deck(service, "history", "--target", "svc", "--json").json["entries"]
    assert [(e["action"], e["version"], e["outcome"]) for e in history] == [
        ("auto-rollback", 2, "ok"), ("deploy", 3, "failed"), ("deploy", 2, "ok")]
    assert "status 500" in history[0]["reason"]
    status = deck(service, "status", "--json").json
    assert [d["version"] for d in status["deployments"] if d["target"] == "svc"] == [2]
    audit = deck(service, "audit", "--verb", "deploy", "--json").json["entries"][0]
    assert audit["result"] == "failed"
    assert json.loads(audit["detail"])["checks"][0]["status_code"] == 500


def test_user_rollback_runs_the_rollback_command(service):
    deck(service, "deploy", "tiny@1", "--target", "svc", "--yes")
    deck(service, "deploy", "tiny@2", "--target", "svc", "--yes")
    result = deck(service, "rollback", "--target", "svc", "--yes", "--json")
    assert result.code == 0, result
    assert serving(service) == "1"


def test_unreachable_target_changes_nothing(service, tmp_path):
    config = Path(service["env"]["MODELDECK_CONFIG"])
    config.write_text(config.read_text().replace(sys.executable, str(tmp_path / "no-such-binary"), 1))
    result = deck(service, "deploy", "tiny@1", "--target", "svc", "--yes")
    assert result.code == 1
    assert "cannot be reached" in result.stderr
    assert deck(service, "history", "--target", "svc", "--json").json["entries"] == []


def test_two_deploys_to_one_target_never_overlap(service):
    from engine.paths import deck_paths
    from engine.targets.flow import target_lock

    with target_lock(deck_paths(service["home"]), "svc"):
        result = deck(service, "deploy", "tiny@1", "--target", "svc", "--yes")
    assert result.code == 1
    assert "in progress" in result.stderr
    assert deck(service, "history", "--target", "svc", "--json").json["entries"] == []


def test_targets_list_and_check_never_show_the_secret(service):
    deck(service, "deploy", "tiny@1", "--target", "svc", "--yes")
    listed = deck(service, "targets", "list", "--json")
    checked = deck(service, "targets", "check", "--json")
    human = deck(service, "targets", "list")
    for output in (listed.stdout, checked.stdout, human.stdout, listed.stderr, checked.stderr):
        assert "s3cr3t-token-value" not in output
    svc = next(t for t in listed.json["targets"] if t["name"] == "svc")
    assert svc["serving"] == "tiny@1" and svc["secret_configured"] is True
    svc_check = next(t for t in checked.json["targets"] if t["name"] == "svc")
    assert svc_check["reachable"] is True and svc_check["extra"]["healthy"] is True
