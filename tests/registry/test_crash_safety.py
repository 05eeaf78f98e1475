"""A deploy is one transaction: SIGKILL at any instant leaves the old or the new state, with
history and audit agreeing and every blob intact. Concurrent deploys serialize."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_modeldeck

KILL_POINTS = ["deploy:begin", "deploy:after-history", "deploy:after-pointer",
               "deploy:before-commit", "deploy:after-commit"]


@pytest.fixture
def deployed_v1(deck_home, tiny_model_dir, tiny_model_dir_b):
    for source in (tiny_model_dir, tiny_model_dir_b):
        assert run_modeldeck("models", "import", str(source), "--name", "tiny", home=deck_home).code == 0
    assert run_modeldeck("deploy", "tiny@1", "--yes", home=deck_home).code == 0
    return deck_home


def start_paused(home: Path, point: str, marker: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_TEST_PAUSE": point,
           "MODELDECK_TEST_PAUSE_FILE": str(marker)}
    return subprocess.Popen([sys.executable, "-m", "console.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when_paused(process: subprocess.Popen, marker: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        assert process.poll() is None, "the process ended before reaching its pause point"
        assert time.monotonic() < deadline, "pause point never reached"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def assert_consistent(home: Path) -> tuple[str, int]:
    from engine.registry import Registry
    from engine.paths import deck_paths

    connection = sqlite3.connect(home / "registry.db")
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()
    registry = Registry(deck_paths(home))
    try:
        deployment = registry.deployment("local")
        history = registry.history("local", limit=1000)
        audits = [a for a in registry.audit(limit=1000) if a.verb in ("deploy", "rollback")]
        assert deployment.history_id == history[0].id
        assert (deployment.model, deployment.version) == (history[0].model, history[0].version)
        assert sorted(a.history_id for a in audits) == sorted(h.id for h in history)
        for newer, older in zip(history, history[1:]):
            assert (newer.previous_model, newer.previous_version) == (older.model, older.version)
        assert registry.verify_all() == []
        return deployment.model, deployment.version
    finally:
        registry.close()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_inside_deploy_leaves_old_or_new(deployed_v1, tmp_path, point):
    marker = tmp_path / "paused"
    process = start_paused(deployed_v1, point, marker, "deploy", "tiny@2", "--yes")
    kill_when_paused(process, marker)
    expected_version = 2 if point == "deploy:after-commit" else 1
    assert assert_consistent(deployed_v1) == ("tiny", expected_version)
    # The deck still works after the crash.
    assert run_modeldeck("deploy", "tiny@2", "--yes", home=deployed_v1).code == 0
    assert assert_consistent(deployed_v1) == ("tiny", 2)


def test_sigkill_during_import_registers_nothing(deployed_v1, tmp_path, tiny_model_dir):
    marker = tmp_path / "paused"
    process = start_paused(deployed_v1, "import:after-blobs", marker,
                           "models", "import", str(tiny_model_dir), "--name", "other")
    kill_when_paused(process, marker)
    listing = run_modeldeck("models", "list", "--json", home=deployed_v1).json
    assert [v["ref"] for v in listing["versions"]] == ["tiny@1", "tiny@2"]
    assert_consistent(deployed_v1)


def test_concurrent_deploys_serialize(deployed_v1, tiny_model_dir):
    writers = 6
    for _ in range(writers):  # same content: cheap, the blobs are shared
        run_modeldeck("models", "import", str(tiny_model_dir), "--name", "tiny", home=deployed_v1)
    processes = [subprocess.Popen(
        [sys.executable, "-m", "console.cli", "deploy", f"tiny@{3 + i}", "--yes",
         "--reason", f"writer {i}"],
        cwd=REPO, env={**os.environ, "MODELDECK_HOME": str(deployed_v1)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(writers)]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    # Every writer is recorded, and each row's "previous" is the row before it: no lost update.
    assert_consistent(deployed_v1)
    history = run_modeldeck("history", "--json", home=deployed_v1).json["entries"]
    assert sorted(e["reason"] for e in history[:writers]) == [f"writer {i}" for i in range(writers)]
    assert len(history) == writers + 1
