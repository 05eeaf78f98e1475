"""`ray-serve` targets against a real Ray head on loopback (tests/targets/ray_cluster.py):
two versions deployed and rolled back through Ray Serve's REST API while a client sends
requests (none may fail), and a version Ray cannot start (DEPLOY_FAILED: Ray's message, exit 1,
nothing recorded as deployed). Ray's replicas run modeldeck's own engine
(engine.serving.ray_app). Measured here (2 cores shared with other work, 2026-11-26): 2.5-3.5
min for the module: the Ray head 20-70 s to start (7 s on a quiet machine), each change 15-30 s
(its replicas import torch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.targets.ray_cluster import RayHead, Traffic, ray_head  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
SECRET = "ray-token-never-printed-5b1f"


def _configure(directory: Path, head: RayHead, app: str, num_cpus: float = 0.5) -> Path:
    config = directory / "deck.toml"
    config.write_text(f"""
[[targets]]
name = "ray"
kind = "ray-serve"
address = "{head.dashboard}"
url = "{head.serve_url}"
app = "{app}"
route_prefix = "/{app}"
replicas = 1
num_cpus = {num_cpus}
timeout_s = 30
deploy_timeout_s = 240
api_key_env = "RAY_TOKEN"
[targets.gate]
prompts = ["Hello", "1, 2, 3,"]
max_tokens = 4
""")
    return config


@pytest.fixture
def ray_deck(cli, ray_head, tmp_path, monkeypatch, tiny_model_dir, tiny_model_dir_b):  # noqa: F811
    """A deck with tiny@1, tiny@2 (other weights) and tiny@3, whose tokenizer files are
    missing: it imports, and Ray's replicas cannot load it."""
    broken = tmp_path / "no-tokenizer"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(tiny_model_dir / name, broken / name)
    for source in (tiny_model_dir, tiny_model_dir_b, broken):
        assert cli("models", "import", str(source), "--name", "tiny").code == 0
    monkeypatch.setenv("RAY_TOKEN", SECRET)

    def configure(app: str, num_cpus: float = 0.5) -> str:
        monkeypatch.setenv("MODELDECK_CONFIG", str(_configure(tmp_path, ray_head, app, num_cpus)))
        return f"{ray_head.serve_url}/{app}"

    return configure


def _deployment(deck_home: Path) -> tuple[str, str]:
    from engine.deck import Deck

    deck = Deck.at(deck_home)
    try:
        current = deck.registry.deployment("ray")
        return (current.ref, current.state) if current else ("nothing", "none")
    finally:
        deck.close()


def _revisions(deck_home: Path) -> list[dict]:
    path = deck_home / "targets" / "ray" / "ray-serve-revisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_versions_a_rollback_and_a_failed_version_lose_no_request(cli, ray_deck, deck_home):
    """One application through four changes (each costs replicas that import torch, so they
    share one test): deploy, deploy under traffic, roll back under traffic, and a version Ray
    cannot start under traffic: Ray keeps the old replicas while the new ones fail (surge), and
    modeldeck re-applies the stored configuration. No request fails across any of it."""
    route = ray_deck("deck")
    outputs = [cli("deploy", "tiny@1", "--target", "ray", "--yes")]
    assert outputs[-1].code == 0, outputs[-1]

    with Traffic(route) as traffic:
        traffic.wait_for("tiny@1")
        outputs.append(cli("deploy", "tiny@2", "--target", "ray", "--yes"))
        assert outputs[-1].code == 0, outputs[-1]
        traffic.wait_for("tiny@2")
        ray_deck("deck", num_cpus=0.25)  # settings changed since: the rollback restores tiny@1's
        outputs.append(cli("rollback", "--target", "ray", "--yes"))
        assert outputs[-1].code == 0, outputs[-1]
        traffic.wait_for("tiny@1")
        outputs.append(cli("deploy", "tiny@3", "--target", "ray", "--yes"))
        traffic.wait_for("tiny@1")
    assert traffic.failures == []
    assert {"tiny@1", "tiny@2"} <= set(traffic.answered) and "tiny@3" not in traffic.answered
    failed = outputs[-1]
    assert failed.code == 1 and "DEPLOY_FAILED" in failed.stderr, failed
    assert "rolled back to tiny@1" in failed.stderr
    assert _deployment(deck_home) == ("tiny@1", "active")
    # Ray keeps no history: the rollback and the revert re-applied the configuration stored
    # for tiny@1; the version that never ran is not stored.
    revisions = _revisions(deck_home)
    assert [entry["ref"] for entry in revisions] == ["tiny@1", "tiny@2", "tiny@1", "tiny@1"]
    assert revisions[0]["config"] == revisions[2]["config"] == revisions[3]["config"]
    assert revisions[2]["config"]["deployments"][0]["ray_actor_options"] == {"num_cpus": 0.5}

    check = cli("targets", "check", "--json")
    ray = next(t for t in check.json["targets"] if t["name"] == "ray")
    assert ray["reachable"] and ray["extra"]["status"] == "RUNNING"
    assert ray["extra"]["serving"] == "tiny@1" and ray["extra"]["replicas"] == {"RUNNING": 1}
    assert all(SECRET not in output.stdout + output.stderr for output in [*outputs, check])


def test_a_version_ray_cannot_start_fails_with_rays_message(cli, ray_deck, deck_home):
    """Ray reports DEPLOY_FAILED: its message in one line, exit 1, and nothing recorded as
    deployed (the application never served before, so nothing is rolled back to)."""
    ray_deck("failing")
    result = cli("deploy", "tiny@3", "--target", "ray", "--yes")
    assert result.code == 1, result
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "DEPLOY_FAILED" in message and "failed to start" in message
    assert "Traceback" not in message and SECRET not in message + result.stdout
    assert _deployment(deck_home) == ("tiny@3", "failed")
    assert _revisions(deck_home) == []

    check = cli("targets", "check", "--json")
    ray = next(t for t in check.json["targets"] if t["name"] == "ray")
    assert ray["extra"]["status"] == "DEPLOY_FAILED" and "failed to start" in ray["detail"]
