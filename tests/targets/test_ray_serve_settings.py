"""`ray-serve` targets without a cluster: deck.toml checks (exit 2, one line), the PUT body that
keeps the cluster's other applications, Ray's message in one line, an unreachable dashboard, and
that `import engine` (and the target) never load ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.targets.ray_cluster import free_ports

BASE = '[[targets]]\nname = "ray"\nkind = "ray-serve"\n'


@pytest.mark.parametrize("extra, expected", [
    ("", "needs address"),
    ('address = "127.0.0.1:8265"\n', "address: Value error, must be an http"),
    ('address = "http://h:8265"\nreplicas = 0\n', "replicas"),
    ('address = "http://h:8265"\nnum_cpus = -1\n', "num_cpus"),
    ('address = "http://h:8265"\nroute_prefix = "deck"\n', "route_prefix"),
    ('address = "http://h:8265"\napp = "a b"\n', "app"),
    ('address = "http://h:8265"\nsurge_percent = 101\n', "surge_percent"),
    ('address = "http://h:8265"\nurl = "ftp://h"\n', "must be an http"),
])
def test_bad_settings_exit_2_in_one_line(cli, tmp_path, monkeypatch, extra, expected):
    config = tmp_path / "deck.toml"
    config.write_text(BASE + extra)
    monkeypatch.setenv("MODELDECK_CONFIG", str(config))
    result = cli("targets", "list")
    assert result.code == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_defaults_name_the_app_and_the_route(tmp_path):
    from engine.config import load_config

    config = tmp_path / "deck.toml"
    config.write_text(BASE + 'address = "http://head:8265/"\nroute_prefix = "/llm/"\n')
    target = load_config(config).target("ray")
    assert target is not None
    assert (target.app_name, target.address, target.route_prefix) == ("ray", "http://head:8265", "/llm")
    assert target.route_url == "http://head:8000/llm"


def test_the_put_keeps_the_other_applications():
    from engine.targets.ray_serve import deploy_body

    other = {"name": "other", "import_path": "x:y", "route_prefix": "/o"}
    details = {"proxy_location": "EveryNode", "applications": {
        "other": {"status": "RUNNING", "deployed_app_config": other},
        "deck": {"status": "RUNNING", "deployed_app_config": {"name": "deck", "args": {"ref": "m@1"}}}}}
    ours = {"name": "deck", "args": {"ref": "m@2"}}
    body = deploy_body(details, ours, {"host": "127.0.0.1", "port": 8000})
    assert body["applications"] == [other, ours]
    assert body["proxy_location"] == "EveryNode" and body["http_options"]["port"] == 8000


def test_rays_message_is_one_line_ending_with_the_error():
    from engine.targets.ray_serve import app_state

    traceback = ("The deployment failed to start 3 times in a row. See controller logs.\n"
                 "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                 "FileNotFoundError: m@3: its files are not at /nope on this node\n")
    details = {"controller_info": {"node_id": "n"}, "applications": {"deck": {
        "status": "DEPLOY_FAILED", "message": "Failed to update the deployments ['R'].",
        "deployed_app_config": {"args": {"ref": "m@3"}},
        "deployments": {"R": {"status": "DEPLOY_FAILED", "message": traceback,
                              "replicas": [{"state": "STOPPING"}]}}}}}
    state = app_state(details, "deck")
    assert state["status"] == "DEPLOY_FAILED" and state["serving"] == "m@3"
    assert "\n" not in state["message"] and "Traceback" not in state["message"]
    assert state["message"].endswith("FileNotFoundError: m@3: its files are not at /nope on this node")
    assert "failed to start 3 times" in state["summary"]
    assert "not deployed" in app_state({"applications": {}}, "deck")["summary"]


def test_an_unreachable_dashboard_is_down_with_the_reason(cli, tmp_path, monkeypatch):
    port = free_ports(1)[0]  # nothing listens there
    config = tmp_path / "deck.toml"
    config.write_text(BASE + f'address = "http://127.0.0.1:{port}"\ntimeout_s = 2\n'
                      'api_key_env = "RAY_TOKEN"\n')
    monkeypatch.setenv("MODELDECK_CONFIG", str(config))
    monkeypatch.setenv("RAY_TOKEN", "secret-ray-token-9f")
    result = cli("targets", "check", "--json")
    assert result.code == 1
    ray = next(t for t in result.json["targets"] if t["name"] == "ray")
    assert ray["reachable"] is False and "ConnectError" in ray["detail"]
    assert "secret-ray-token-9f" not in result.stdout + result.stderr


def test_import_engine_and_the_target_load_no_ray():
    code = ("import sys, engine, engine.config, engine.targets.ray_serve; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_rollback_reuses_the_stored_configuration_of_the_same_application(tmp_path):
    """The revision file is modeldeck's history of what ran (Ray keeps none): the last entry for
    the version wins, its files are read where they are now, and an entry for another
    application or route (deck.toml changed since) is not re-applied."""
    from engine.config import load_config
    from engine.paths import DeckPaths
    from engine.targets.ray_serve import RayServeTarget

    config = tmp_path / "deck.toml"
    config.write_text(BASE + 'address = "http://h:8265"\napp = "deck"\nroute_prefix = "/deck"\n')
    settings = load_config(config).target("ray")
    assert settings is not None
    target = RayServeTarget(settings, DeckPaths(tmp_path / "home"))
    version: Any = SimpleNamespace(ref="m@1")  # all the revision file reads of a version
    ran = {"name": "deck", "route_prefix": "/deck", "args": {"ref": "m@1", "files": "/old"},
           "deployments": [{"num_replicas": 3}]}
    target._remember(version, {**ran, "deployments": [{"num_replicas": 1}]})
    target._remember(version, ran)
    restored = target._stored(version, Path("/now"))
    assert restored == {**ran, "args": {"ref": "m@1", "files": "/now"}}
    target._remember(version, {**ran, "name": "renamed"})
    assert target._stored(version, Path("/now")) is None
