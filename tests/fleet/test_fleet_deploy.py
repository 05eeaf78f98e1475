"""`modeldeck deploy NAME@VERSION --hosts a,b` over a real sshd: the version is pushed to each
host with the content-addressed transfer, each host runs its own gated deploy, and when host b's
deploy fails, host a (already moved) is returned to what it served before; every step is in
history and audit on both sides."""

from __future__ import annotations

import json

from tests.fleet.conftest import Fleet, modeldeck_on
from tests.fleet.test_fleet_status import fleet_cli

# Host b deploys to a command target whose deploy command fails: its own gate refuses.
FAILING_TARGET = """
[[targets]]
name = "gpu"
kind = "command"
deploy_command = ["false"]
health_url = "http://127.0.0.1:9/health"
"""


def history_of(home) -> list[dict]:
    done = modeldeck_on(home, "history", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["entries"]


def test_deploy_across_hosts_reverses_the_first_when_the_second_fails(
        fleet: Fleet, tiny_model_dir, tiny_model_dir_b) -> None:
    with open(fleet.homes["b"] / "deck.toml", "a") as config:
        config.write(FAILING_TARGET)
    fleet.write_hosts(("a", "fleet-a"), ("b", "fleet-b"), ("gone", "fleet-down"),
                      extra={"b": 'target = "gpu"'})
    for directory in (tiny_model_dir, tiny_model_dir_b):
        assert fleet_cli("models", "import", str(directory), "--name", "tiny").returncode == 0
    first = fleet_cli("deploy", "tiny@1", "--hosts", "a", "--yes", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["moved"] == ["a"]

    done = fleet_cli("deploy", "tiny@2", "--hosts", "a,b", "--yes", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["failed_host"] == "b" and not result["ok"]
    assert [(s["host"], s["step"], s["ok"]) for s in result["steps"]] == [
        ("a", "push", True), ("a", "deploy", True), ("b", "push", True), ("b", "deploy", False),
        ("a", "reverse", True)]

    # Host a: deployed 1, then 2, then back to 1, in its own history and audit.
    on_a = history_of(fleet.homes["a"])
    assert [(e["action"], e["version"]) for e in on_a] == [("rollback", 1), ("deploy", 2),
                                                          ("deploy", 1)]
    assert "failed on host b" in on_a[0]["reason"]
    status_a = json.loads(modeldeck_on(fleet.homes["a"], "status", "--json").stdout)
    assert [d["ref"] for d in status_a["deployments"]] == ["tiny@1"]
    # Host b: its gated deploy failed there and is recorded there (it received the version).
    on_b = history_of(fleet.homes["b"])
    assert [(e["target"], e["outcome"]) for e in on_b] == [("gpu", "failed")]
    audit_b = json.loads(modeldeck_on(fleet.homes["b"], "audit", "--json").stdout)["entries"]
    assert {"receive", "deploy"} <= {entry["verb"] for entry in audit_b}

    # This deck: host:a moved 1 -> 2 -> 1; host b's failure and the whole roll in its audit.
    here = json.loads(fleet_cli("history", "--json").stdout)["entries"]
    assert [(e["target"], e["action"], e["version"]) for e in here] == [
        ("host:a", "rollback", 1), ("host:a", "deploy", 2), ("host:a", "deploy", 1)]
    audit = json.loads(fleet_cli("audit", "--json").stdout)["entries"]
    failed_b = next(e for e in audit if e["verb"] == "fleet-host")
    assert failed_b["arguments"]["host"] == "b" and failed_b["result"] == "failed"
    roll = next(e for e in audit if e["verb"] == "fleet-deploy")
    assert roll["result"] == "failed" and len(json.loads(roll["detail"])) == 5

    # rollback --hosts a,b: a goes back (1 -> 2), b has nothing to roll back: a is reversed.
    back = fleet_cli("rollback", "--hosts", "a,b", "--yes", "--json")
    assert back.returncode == 1, back.stdout + back.stderr
    result = json.loads(back.stdout)
    assert [(s["host"], s["step"], s["ok"], s["detail"]) for s in result["steps"]][::2] == [
        ("a", "rollback", True, "tiny@1 -> tiny@2"), ("a", "reverse", True, "tiny@2 -> tiny@1")]
    assert "no earlier deployment to roll back" in result["steps"][1]["detail"]
    assert [(e["action"], e["version"]) for e in history_of(fleet.homes["a"])][:2] == [
        ("rollback", 1), ("rollback", 2)]
    here = json.loads(fleet_cli("history", "--json").stdout)["entries"]
    assert [(e["action"], e["version"]) for e in here][:2] == [("rollback", 1), ("rollback", 2)]

    # A host that is down stops the roll at its push, with ssh's reason; nothing else moves.
    down = fleet_cli("deploy", "tiny@2", "--hosts", "gone,a", "--yes")
    assert down.returncode == 1
    assert "gone  push  FAILED" in down.stdout and "connection refused" in down.stdout
    assert down.stdout.rstrip().endswith("no host was moved")
    assert history_of(fleet.homes["a"])[0]["reason"].startswith("reversed")  # a not touched
