"""`modeldeck fleet status|watch` against a real sshd: two hosts up with their own data, a host
on a closed port down with ssh's reason, and one shared connection per host across polls."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from tests.fleet.conftest import REPO, Fleet, modeldeck_on


def fleet_cli(*args: str) -> subprocess.CompletedProcess:
    """The local modeldeck as a user runs it (MODELDECK_HOME, MODELDECK_SSH_CONFIG from the fixture)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([str(REPO / ".venv/bin/modeldeck"), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_fleet_status_shows_each_host_with_its_own_data_and_a_down_host_with_the_reason(
        fleet: Fleet, tiny_model_dir) -> None:
    imported = modeldeck_on(fleet.homes["b"], "models", "import", str(tiny_model_dir),
                            "--name", "tiny")
    assert imported.returncode == 0, imported.stderr
    fleet.write_hosts(("a", "fleet-a"), ("b", "fleet-b"), ("gone", "fleet-down"),
                      ("locked", "fleet-nokey"))
    done = fleet_cli("fleet", "status", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    hosts = {host["name"]: host for host in document["hosts"]}
    assert hosts["a"]["state"] == "up" and hosts["b"]["state"] == "up"
    # Each host answered from its own deck home: b holds a model, a none.
    assert hosts["a"]["status"]["home"] == str(fleet.homes["a"])
    assert hosts["b"]["status"]["home"] == str(fleet.homes["b"])
    assert (hosts["a"]["status"]["model_count"], hosts["b"]["status"]["model_count"]) == (0, 1)
    assert hosts["gone"]["state"] == "down"
    assert hosts["gone"]["reason"] == "connection refused"
    assert hosts["locked"]["state"] == "down"
    assert hosts["locked"]["reason"] == "permission denied (publickey)"
    assert document["totals"]["up"] == 2 and document["totals"]["down"] == 2
    assert document["totals"]["running_jobs"] == 0
    assert "client_key" not in done.stdout + done.stderr  # nothing about the keys is shown
    text = fleet_cli("fleet", "status")
    assert text.returncode == 0
    assert "connection refused" in text.stdout and "2 up" in text.stdout


def test_fleet_watch_totals_host_memory_across_hosts(fleet: Fleet) -> None:
    fleet.write_hosts(("a", "fleet-a"), ("b", "fleet-b"))
    done = fleet_cli("fleet", "watch", "--json", "--count", "1")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [host["state"] for host in document["hosts"]] == ["up", "up"]
    one_host = document["hosts"][0]["summary"]["memory_total_bytes"]
    assert one_host > 0
    assert document["totals"]["memory_total_bytes"] == 2 * one_host  # two decks, one box
    assert document["totals"]["gpus"] == 0


def test_second_poll_reuses_the_shared_connection(fleet: Fleet) -> None:
    from engine.config import load_config
    from engine.remote.fleet import poll_fleet
    from engine.remote.ssh import control_path, master_pid

    fleet.write_hosts(("a", "fleet-a"))
    host = load_config(fleet.local / "deck.toml").hosts[0]
    run_dir = fleet.local / "run"
    assert master_pid(run_dir, host) is None
    first = poll_fleet(run_dir, (host,))
    assert first.hosts[0].state == "up"
    socket_path = control_path(run_dir, host)
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert socket_path.parent == run_dir / "ssh"  # under the deck home when the path is short
    master, inode = master_pid(run_dir, host), socket_path.stat().st_ino
    assert master is not None
    second = poll_fleet(run_dir, (host,))
    assert second.hosts[0].state == "up"
    assert (master_pid(run_dir, host), socket_path.stat().st_ino) == (master, inode)


def test_a_late_answer_is_stale_and_config_text_reaches_the_host_as_words(fleet: Fleet) -> None:
    """A home full of shell syntax is a path there, never a command; a host slower than its
    stale_after_s still shows its data, marked stale."""
    odd_home = fleet.root / f"deck $(touch {fleet.root}/pwned); `touch {fleet.root}/pwned2`"
    fleet.write_hosts(("odd", "fleet-a"), homes={"odd": odd_home},
                      extra={"odd": "stale_after_s = 0.001"})
    done = fleet_cli("fleet", "status", "--json")
    assert done.returncode == 0, done.stderr
    host = json.loads(done.stdout)["hosts"][0]
    assert host["state"] == "stale" and host["reason"].startswith("answered after")
    assert host["status"]["home"] == str(odd_home)
    assert not (fleet.root / "pwned").exists() and not (fleet.root / "pwned2").exists()
