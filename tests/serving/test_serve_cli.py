"""`modeldeck deploy` (autostart, --wait, --no-start) and `modeldeck serve --stop` as real
processes: the detached server and its run-state files."""

from __future__ import annotations

import json
import socket
import stat

import openai
import pytest

from tests.conftest import run_modeldeck, stop_leftover_server


def settings(port: int) -> str:
    return f"[serve]\ndtype = \"float32\"\nport = {port}\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def detached_home(deck_home, cli, tiny_model_dir, tiny_model_dir_distinct):
    cli("models", "import", str(tiny_model_dir), "--name", "tiny")
    cli("models", "import", str(tiny_model_dir_distinct), "--name", "tiny")
    yield deck_home
    stop_leftover_server(deck_home)


def served_version(url: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    raw = client.completions.with_raw_response.create(model="tiny", prompt="Hi", max_tokens=3)
    return raw.headers["x-modeldeck-version"]


def test_deploy_wait_starts_the_server_gates_and_stops(detached_home):
    home = detached_home
    (home / "deck.toml").write_text(settings(free_port()))
    first = run_modeldeck("deploy", "tiny@1", "--wait", "--yes", "--json", home=home)
    assert first.code == 0, first
    assert first.json["history"]["outcome"] == "ok"
    info = json.loads((home / "run" / "server.json").read_text())
    assert isinstance(info["pid"], int) and info["url"].startswith("http://127.0.0.1:")
    assert stat.S_IMODE((home / "run" / "control.token").stat().st_mode) == 0o600
    status = run_modeldeck("status", "--json", home=home).json
    assert status["server"]["state"] == "running" and status["server"]["pid"] == info["pid"]
    # The tiny model is a Llama: the fused step serves it, and status says so (engine.json).
    engine = status["server"]["engine"]
    assert engine["engine_path"] == "fused" and engine["version"] == "tiny@1", engine
    assert engine["device"] == "cpu" and engine["dtype"] == "float32" and engine["torch_threads"] >= 1
    text = run_modeldeck("status", home=home).stdout
    assert "engine    fused (Llama block" in text and "on cpu, float32" in text, text
    assert served_version(info["url"]) == "tiny@1"

    second = run_modeldeck("deploy", "tiny@2", "--wait", "--yes", home=home)
    assert second.code == 0, second
    assert served_version(info["url"]) == "tiny@2"
    engine = run_modeldeck("status", "--json", home=home).json["server"]["engine"]
    assert engine["version"] == "tiny@2"  # rewritten on the switch

    stopped = run_modeldeck("serve", "--stop", "--json", home=home)
    assert stopped.json["stopped"] is True and stopped.json["pid"] == info["pid"]
    assert not (home / "run" / "server.json").exists()
    assert run_modeldeck("status", "--json", home=home).json["server"]["state"] == "stopped"


DEFAULTS = {"MODELDECK_SERVE_AUTOSTART": None}  # the shipped default: [serve] autostart = true


def test_deploy_to_local_starts_the_server_when_none_runs(detached_home):
    home = detached_home
    (home / "deck.toml").write_text(settings(free_port()))
    pointer_only = run_modeldeck("deploy", "tiny@1", "--no-start", "--yes", "--json", home=home, env=DEFAULTS)
    assert pointer_only.code == 0, pointer_only
    assert pointer_only.json["server"]["state"] == "stopped"
    assert not (home / "run" / "server.json").exists()

    # Already deployed but not served: a plain deploy starts the server for it.
    started = run_modeldeck("deploy", "tiny@1", "--yes", "--json", home=home, env=DEFAULTS)
    assert started.code == 0, started
    assert started.json["changed"] is False and started.json["server"]["state"] == "running"
    url = started.json["server"]["url"]
    assert served_version(url) == "tiny@1"
    run_modeldeck("serve", "--stop", home=home)

    moved = run_modeldeck("deploy", "tiny@2", "--yes", home=home, env=DEFAULTS)
    assert moved.code == 0, moved
    assert "local server: http://127.0.0.1:" in moved.stdout
    assert served_version(json.loads((home / "run" / "server.json").read_text())["url"]) == "tiny@2"
    assert run_modeldeck("history", "--json", home=home).json["entries"][0]["outcome"] == "ok"


def test_a_server_that_cannot_start_says_why_and_moves_nothing(detached_home):
    home = detached_home
    with socket.socket() as taken:  # another program holds the configured port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (home / "deck.toml").write_text(settings(port))
        failed = run_modeldeck("deploy", "tiny@1", "--yes", home=home, env=DEFAULTS)
    assert failed.code == 1, failed
    assert f"cannot listen on 127.0.0.1:{port}" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert run_modeldeck("history", "--json", home=home).json["entries"] == []
    assert not (home / "run" / "server.json").exists()
