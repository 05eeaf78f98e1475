"""The local server's lifecycle as real processes: one control token per deck, refusing a start
request the running server does not match, the warning for a public address without a key,
flags validated before anything is written, concurrent starts converging on one server, and a
pending deployment gated before it is served."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, run_modeldeck, stop_leftover_server

AUTOSTART = {"MODELDECK_SERVE_AUTOSTART": None}  # the shipped default: autostart on


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def token_of(home: Path) -> str:
    return (home / "run" / "control.token").read_text().strip()


def control_status(url: str, token: str) -> int:
    """The status of an authenticated no-op (a malformed deploy): 400 when the token is taken,
    403 when it is refused."""
    response = httpx.post(f"{url}/control/deploy", json={}, timeout=30,
                          headers={"X-Modeldeck-Token": token})
    return response.status_code


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def home(deck_home, cli, tiny_model_dir):
    """A deck with tiny@1 imported, and whatever server a test starts stopped afterwards."""
    cli("models", "import", str(tiny_model_dir), "--name", "tiny")
    (deck_home / "deck.toml").write_text(f'[serve]\ndtype = "float32"\nport = {free_port()}\n')
    yield deck_home
    stop_leftover_server(deck_home)


def start(home: Path, *flags: str, env: dict | None = None):
    result = run_modeldeck("serve", "--detach", "--json", *flags, home=home, env=env)
    assert result.code == 0, result
    return result.json


def stop(home: Path) -> None:
    assert run_modeldeck("serve", "--stop", home=home).code == 0


# ---- 1. one control token per deck -----------------------------------------------------------


def test_the_control_token_survives_restarts_and_changes_only_on_rotate(home):
    first = start(home)
    token = token_of(home)
    assert stat.S_IMODE((home / "run" / "control.token").stat().st_mode) == 0o600
    stop(home)
    second = start(home)
    assert second["pid"] != first["pid"] and token_of(home) == token  # a restart keeps it
    assert control_status(second["url"], token) == 400

    rotated = run_modeldeck("serve", "--rotate-token", home=home)
    assert rotated.code == 0, rotated
    assert f"running server (pid {second['pid']})" in rotated.stdout
    new = token_of(home)
    assert new != token and new not in rotated.stdout + rotated.stderr
    assert stat.S_IMODE((home / "run" / "control.token").stat().st_mode) == 0o600
    # The running server took the new token without a restart, and refuses the old one.
    assert control_status(second["url"], token) == 403
    assert control_status(second["url"], new) == 400
    stop(home)

    offline = run_modeldeck("serve", "--rotate-token", "--json", home=home)
    assert offline.code == 0 and offline.json["server_running"] is False, offline
    newest = token_of(home)
    assert newest != new
    third = start(home)
    assert token_of(home) == newest
    assert control_status(third["url"], new) == 403
    assert control_status(third["url"], newest) == 400
    stop(home)


# ---- 2. a start request the running server does not match -----------------------------------


def test_detach_refuses_a_running_server_with_other_settings(home):
    running = start(home)
    where = f"127.0.0.1:{running['port']}"
    secret = "s3cret-key-never-printed"
    with_key = run_modeldeck("serve", "--detach", "--api-key", secret, home=home)
    assert with_key.code == 2, with_key
    line = one_line_error(with_key)
    assert f"a server already runs on {where} without an API key" in line
    assert "modeldeck serve --stop" in line and "drop --api-key" in line
    assert secret not in with_key.stdout + with_key.stderr

    by_env = run_modeldeck("serve", "--detach", home=home, env={"MODELDECK_API_KEY": secret})
    assert by_env.code == 2 and "without an API key" in one_line_error(by_env), by_env
    other_port = run_modeldeck("serve", "--detach", "--port", str(free_port()), home=home)
    assert other_port.code == 2 and "drop --port" in one_line_error(other_port), other_port
    other_host = run_modeldeck("serve", "--detach", "--host", "127.0.0.2", home=home)
    assert other_host.code == 2 and "not on 127.0.0.2" in one_line_error(other_host), other_host
    assert start(home)["pid"] == running["pid"]  # the same request is answered with it
    stop(home)

    keyed = start(home, env={"MODELDECK_API_KEY": secret})
    recorded = (home / "run" / "server.json").read_text()
    assert json.loads(recorded)["api_key_set"] is True and secret not in recorded
    assert secret not in json.dumps(keyed)
    wrong = run_modeldeck("serve", "--detach", "--api-key", "another-key", home=home)
    assert wrong.code == 2 and "with a different API key" in one_line_error(wrong), wrong
    assert start(home, "--api-key", secret)["pid"] == keyed["pid"]
    # The same key from a file matches it too; the key is in no process's command line.
    key_file = home.parent / "api.key"
    key_file.write_text(secret + "\n")
    assert start(home, "--api-key-file", str(key_file))["pid"] == keyed["pid"]
    assert secret.encode() not in Path(f"/proc/{keyed['pid']}/cmdline").read_bytes()
    key_file.write_text("  \n")
    empty = run_modeldeck("serve", "--detach", "--api-key-file", str(key_file), home=home)
    assert empty.code == 2 and "the file is empty" in one_line_error(empty), empty
    missing = run_modeldeck("serve", "--detach", "--api-key-file", str(home / "nope"), home=home)
    assert missing.code == 2 and "no such file" in one_line_error(missing), missing
    stop(home)


# ---- 3. a public address without a key ------------------------------------------------------


def test_a_public_address_without_a_key_is_warned_about(home):
    result = run_modeldeck("serve", "--detach", "--host", "0.0.0.0", "--port", "0", "--json",
                           home=home)
    assert result.code == 0, result
    warning = result.stderr.strip()
    assert warning.startswith("modeldeck: warning: the local server listens on 0.0.0.0:")
    assert "without an API key" in warning and len(warning.splitlines()) == 1
    report = run_modeldeck("status", "--json", home=home).json
    assert len(report["warnings"]) == 1 and "0.0.0.0" in report["warnings"][0]
    human = run_modeldeck("status", home=home).stdout
    assert "warning   the local server listens on 0.0.0.0:" in human
    stop(home)
    assert run_modeldeck("status", "--json", home=home).json["warnings"] == []


def test_the_warning_is_only_for_a_reachable_server_without_a_key():
    from engine.runstate import exposure_warnings

    assert exposure_warnings("0.0.0.0", 8471, api_key_set=False)
    assert exposure_warnings("::", 8471, api_key_set=False)
    assert exposure_warnings("10.1.2.3", 8471, api_key_set=False)
    assert exposure_warnings("box.example", 8471, api_key_set=False)
    assert not exposure_warnings("0.0.0.0", 8471, api_key_set=True)
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert not exposure_warnings(loopback, 8471, api_key_set=False)


@pytest.mark.anyio
async def test_the_console_header_shows_the_warning(deck):
    from dataclasses import replace

    from console import replay
    from console.app import ModeldeckApp
    from console.sources import FixedSource
    from engine.runstate import exposure_warnings

    snapshot = replay.snapshot()
    warning = tuple(exposure_warnings("0.0.0.0", 8471, api_key_set=False))
    snapshot = replace(snapshot, endpoints=replace(snapshot.endpoints, warnings=warning))
    app = ModeldeckApp(deck, FixedSource(snapshot), refresh_s=30.0)
    async with app.run_test(size=(160, 40)) as pilot:
        from console.widgets.footer import DeckHeader

        header = app.dashboard.query_one(DeckHeader)
        for _ in range(100):
            if "WARNING" in header.text:
                break
            await pilot.pause(0.02)
        assert ("WARNING: the local server listens on 0.0.0.0:8471 (reachable from other "
                "machines) without an API key") in header.text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---- 4. flags validated like deck.toml, before anything is written ---------------------------


def deck_listing(home: Path) -> dict[str, tuple[int, str]]:
    """Every path under the deck home with its mode and content hash (directories too)."""
    listing = {}
    for path in sorted(home.rglob("*")):
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        listing[str(path.relative_to(home))] = (path.stat().st_mode, content)
    return listing


BAD_FLAGS = [("--max-batch-size", "0", "--max-batch-size 0: "),
             ("--max-batch-size", "-5", "--max-batch-size -5: "),
             ("--port", "70000", "--port 70000: "),
             ("--max-queue", "-1", "--max-queue -1: "),
             ("--device", "tpu", "--device tpu: must be auto, cpu")]


@pytest.mark.parametrize("detach", [True, False], ids=["detach", "foreground"])
def test_bad_flags_are_refused_before_anything_is_written(home, cli, detach):
    before = deck_listing(home)
    flags = [*BAD_FLAGS]
    if not _has_cuda():
        flags.append(("--device", "cuda", "this machine has no CUDA device"))
    for flag, value, message in flags:
        if detach:
            result = cli("serve", "--detach", flag, value)
        else:  # a process with a time limit: were the flag accepted, it would serve until stopped
            result = run_modeldeck("serve", flag, value, home=home, timeout=60)
        assert result.code == 2, (flag, value, result)
        assert message in one_line_error(result), result
        assert deck_listing(home) == before, f"{flag} {value} changed the deck home"


def test_the_detached_entry_point_validates_before_writing(home):
    before = deck_listing(home)
    for flag, value, message in BAD_FLAGS:
        completed = subprocess.run([sys.executable, "-m", "engine.targets.local", flag, value],
                                   cwd=REPO, capture_output=True, text=True, timeout=120,
                                   env={**os.environ, "MODELDECK_HOME": str(home)})
        assert completed.returncode == 2, completed
        assert message in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
        assert deck_listing(home) == before


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---- 5. concurrent starts converge on one server ---------------------------------------------


def test_concurrent_starts_converge_on_one_server(home):
    assert run_modeldeck("deploy", "tiny@1", "--no-start", "--yes", home=home).code == 0
    environment = {**os.environ, "MODELDECK_HOME": str(home)}
    environment.pop("MODELDECK_SERVE_AUTOSTART")
    commands = [["deploy", "tiny@1", "--yes", "--json"]] * 3 + [["serve", "--detach", "--json"]] * 2
    processes = [subprocess.Popen([sys.executable, "-m", "console.cli", *command], cwd=REPO,
                                  env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for command in commands]
    outcomes = [(process.wait(timeout=240), *process.communicate()) for process in processes]
    assert [code for code, _, _ in outcomes] == [0] * len(commands), outcomes
    pids = {json.loads(out)["server"]["pid"] if "server" in json.loads(out)
            else json.loads(out)["pid"] for _, out, _ in outcomes}
    info = json.loads((home / "run" / "server.json").read_text())
    assert pids == {info["pid"]}
    server_processes = [line for line in _process_list() if "engine.targets.local" in line
                        and f"MODELDECK_HOME={home}" in _environ_of(line)]
    assert len(server_processes) == 1, server_processes
    health = httpx.get(f"{info['url']}/health", timeout=30).json()
    assert health["version"] == "tiny@1"
    stop(home)


def _process_list() -> list[str]:
    """pid and command line of every process of ours (from /proc)."""
    rows = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            rows.append(f"{entry.name} {command}")
    return rows


def _environ_of(row: str) -> str:
    try:
        return Path(f"/proc/{row.split()[0]}/environ").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---- 6. a pending deployment is gated before it is served ------------------------------------


def test_a_pending_version_that_fails_its_gate_is_not_served(home, cli, deck, tiny_model_dir_b):
    cli("models", "import", str(tiny_model_dir_b), "--name", "tiny")
    # tiny@1 passed its gate earlier (an active deployment, recorded as a gated deploy would be).
    deck.registry.move_pointer("local", deck.registry.resolve("tiny@1"), action="deploy",
                               reason="gated earlier", arguments={"ref": "tiny@1"})
    pending = run_modeldeck("deploy", "tiny@2", "--no-start", "--yes", "--json", home=home)
    assert pending.code == 0 and pending.json["history"]["outcome"] == "pending", pending
    assert deck.registry.deployment("local").state == "pending"
    # Every gate prompt now misses its latency bound: tiny@2 cannot pass.
    settings = (home / "deck.toml").read_text()
    (home / "deck.toml").write_text(settings + "\n[serve.gate]\nmax_latency_s = 0.000001\n")

    started = start(home)
    health = httpx.get(f"{started['url']}/health", timeout=30).json()
    assert health["version"] == "tiny@1"
    history = run_modeldeck("history", "--json", home=home).json["entries"]
    assert [(e["action"], e["version"], e["outcome"]) for e in history[:3]] == [
        ("auto-rollback", 1, "ok"), ("deploy", 2, "failed"), ("deploy", 1, "ok")]
    assert "slower than" in history[0]["reason"]
    failed = run_modeldeck("audit", "--verb", "deploy", "--json", home=home).json["entries"][0]
    assert failed["result"] == "failed" and "slower than" in failed["reason"]
    assert failed["arguments"]["at"] == "server start"
    assert "not serving tiny@2" in (home / "run" / "server.log").read_text()
    stop(home)


def test_a_pending_version_that_passes_is_served_and_settled(home):
    pending = run_modeldeck("deploy", "tiny@1", "--no-start", "--yes", "--json", home=home)
    assert pending.json["history"]["outcome"] == "pending", pending
    started = start(home)
    assert httpx.get(f"{started['url']}/health", timeout=30).json()["version"] == "tiny@1"
    status = run_modeldeck("status", "--json", home=home).json
    assert [(d["ref"], d["state"]) for d in status["deployments"]] == [("tiny@1", "active")]
    history = run_modeldeck("history", "--json", home=home).json["entries"]
    assert [(e["version"], e["outcome"]) for e in history] == [(1, "ok")]
    gate = run_modeldeck("audit", "--verb", "gate", "--json", home=home).json["entries"][0]
    assert gate["result"] == "ok" and gate["arguments"]["ref"] == "tiny@1"
    stop(home)


def test_status_says_starting_while_a_start_holds_its_lock(cli, deck_home):
    """The console said `starting` while `modeldeck status` said `stopped`: one reader now."""
    from engine.paths import deck_paths
    from engine.runstate import START_LOCK, run_lock

    assert cli("status", "--json").json["server"]["state"] == "stopped"
    with run_lock(deck_paths(deck_home), START_LOCK) as held:
        assert held
        assert cli("status", "--json").json["server"]["state"] == "starting"
    assert cli("status", "--json").json["server"]["state"] == "stopped"
