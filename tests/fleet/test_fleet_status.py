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
    fleet.write_hosts(("a", "fleet-a"), ("b", "fleet-b"), ("gone", "fleet-down"))
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
    assert document["totals"]["up"] == 2 and document["totals"]["down"] == 1
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
