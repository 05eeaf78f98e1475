"""Pushing a version to another deck over HTTP: only missing blobs travel, an interrupted upload
resumes from what the remote holds, and a half-sent version is never registered there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse

from engine.config import TargetSettings
from engine.deck import Deck
from engine.targets.receiver import transfer_routes
from engine.targets.remote_deck import RemoteDeckTarget
from tests.conftest import REPO, run_modeldeck
from tests.targets.vllm_contract import ServerThread

TOKEN = "remote-control-token"


def receiving_app(deck: Deck) -> Starlette:
    def check(request):
        if request.headers.get("X-Modeldeck-Token") == TOKEN:
            return None
        return JSONResponse({"error": {"message": "forbidden"}}, status_code=403)

    return Starlette(routes=transfer_routes(deck, check))


@pytest.fixture
def remote(tmp_path):
    home = tmp_path / "remote-deck"
    deck = Deck.at(home)
    with ServerThread(receiving_app(deck)) as server:
        yield home, server
    deck.close()


@pytest.fixture
def local(deck, tiny_model_dir, tiny_model_dir_b):
    from engine import actions

    for source in (tiny_model_dir, tiny_model_dir_b):
        actions.import_model(deck, actions.ImportRequest(source, "tiny"))
    return deck


def driver(server: ServerThread, deck: Deck, token: str = TOKEN) -> RemoteDeckTarget:
    os.environ["REMOTE_TOKEN_FOR_TEST"] = token
    settings = TargetSettings(name="edge", kind="modeldeck", url=server.url,
                              api_key_env="REMOTE_TOKEN_FOR_TEST", timeout_s=10)
    return RemoteDeckTarget(settings, deck.paths)


def remote_versions(home: Path) -> list[str]:
    listing = run_modeldeck("models", "list", "--json", home=home).json
    return [v["ref"] for v in listing["versions"]]


def test_push_sends_missing_blobs_and_registers_with_lineage(local, remote):
    home, server = remote
    target = driver(server, local)
    version = local.registry.resolve("tiny@1")
    with target._client() as client:
        target._push_blobs(client, version.files, local.registry.materialize(version))
        ref = target._register(client, version)
        again = target._register(client, version)  # idempotent: the same push twice is one version
    assert ref == again == "tiny@1"
    shown = run_modeldeck("models", "show", "tiny@1", "--json", home=home).json["model"]
    assert shown["lineage"]["pushed_from"].endswith(":tiny@1")
    assert {f["sha256"] for f in shown["files"]} == {f.sha256 for f in version.files}
    # The second version shares its tokenizer and config blobs: only the differing ones travel.
    second = local.registry.resolve("tiny@2")
    with target._client() as client:
        missing = client.post("/control/blobs/missing",
                              json={"sha256": [f.sha256 for f in second.files]}).json()["missing"]
    assert 0 < len(missing) < len(second.files)


def test_wrong_token_is_refused(local, remote):
    home, server = remote
    target = driver(server, local, token="wrong")
    version = local.registry.resolve("tiny@1")
    from engine.errors import ActionFailed

    with pytest.raises(ActionFailed, match="403"), target._client() as client:
        target._push_blobs(client, version.files, local.registry.materialize(version))
    assert remote_versions(home) == []


def test_unregistered_until_every_blob_is_verified(local, remote):
    home, server = remote
    target = driver(server, local)
    version = local.registry.resolve("tiny@1")
    from engine.errors import ActionFailed

    with pytest.raises(ActionFailed, match="missing or corrupt"), target._client() as client:
        target._register(client, version)  # nothing was pushed yet
    assert remote_versions(home) == []


def test_interrupted_upload_resumes(local, remote, tmp_path):
    """SIGKILL the sender mid-blob; the remote keeps the partial bytes, registers nothing, and the
    next push continues from the offset it holds."""
    home, server = remote
    version = local.registry.resolve("tiny@1")
    sizes = {f.sha256: f.size_bytes for f in version.files}
    marker = tmp_path / "paused"
    script = (
        "import os\nfrom engine.deck import Deck\nfrom engine.config import TargetSettings\n"
        "from engine.targets.remote_deck import RemoteDeckTarget\n"
        f"deck = Deck.at({str(local.paths.home)!r})\nversion = deck.registry.resolve('tiny@1')\n"
        f"target = RemoteDeckTarget(TargetSettings(name='edge', kind='modeldeck', url={server.url!r},"
        " api_key_env='REMOTE_TOKEN_FOR_TEST'), deck.paths)\n"
        "with target._client() as client:\n"
        "    target._push_blobs(client, version.files, deck.registry.materialize(version))\n")
    env = {**os.environ, "REMOTE_TOKEN_FOR_TEST": TOKEN, "MODELDECK_TEST_PAUSE": "push:mid-blob",
           "MODELDECK_TEST_PAUSE_FILE": str(marker)}
    sender = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    remote_deck = Deck.at(home)
    while not marker.exists():
        assert sender.poll() is None, "sender finished before pausing"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    partials: list[Path] = []
    while not any(p.stat().st_size for p in partials):  # until the remote notices the drop
        assert time.monotonic() < deadline
        time.sleep(0.02)
        partials = list(remote_deck.paths.blob_tmp.glob("upload-*.partial"))
    assert len(partials) == 1
    sha256 = partials[0].name.removeprefix("upload-").removesuffix(".partial")
    held = partials[0].stat().st_size
    assert 0 < held < sizes[sha256]
    assert remote_versions(home) == []
    target = driver(server, local)
    with target._client() as client:
        status = client.post("/control/blobs/missing", json={"sha256": [sha256]}).json()
        assert status["partial"][sha256] == held
        target._push_blobs(client, version.files, local.registry.materialize(version))
        assert target._register(client, version) == "tiny@1"
    assert remote_deck.registry.blobs.verify(sha256)
    assert not partials[0].exists()
    remote_deck.close()
