"""`modeldeck endpoints discover` against real processes on loopback: a real modeldeck server
(a deck's detached server, started by `deploy --wait`) and a stand-in for Ollama run as its own
process (tests/telemetry/fake_ollama.py: Ollama cannot be installed here). Other processes on a
shared box may be found too, so each test looks for its own engines by URL."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.conftest import run_modeldeck, stop_leftover_server
from tests.telemetry.fake_ollama import LOADED_MODEL, free_port, start_fake_ollama

COMMENTED_DECK = """# my deck: keep this comment
[serve]
dtype = "float32"  # on purpose
port = {port}

# the Ollama I set up by hand
[[endpoints]]
name = "my-ollama"
kind = "ollama"
url = "http://localhost:{ollama_port}"
"""


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_model_dir):
    """(modeldeck server URL, fake Ollama URL), both running for the module's tests."""
    home = tmp_path_factory.mktemp("serving-deck")
    port = free_port()
    (home / "deck.toml").write_text(f'[serve]\ndtype = "float32"\nport = {port}\n')
    imported = run_modeldeck("models", "import", str(tiny_model_dir), "--name", "tiny", home=home)
    assert imported.code == 0, imported
    ollama, ollama_url = start_fake_ollama(tmp_path_factory.mktemp("bin"))
    try:
        deployed = run_modeldeck("deploy", "tiny@1", "--wait", "--yes", home=home)
        assert deployed.code == 0, deployed
        server_url = json.loads((home / "run" / "server.json").read_text())["url"]
        yield server_url, ollama_url
    finally:
        stop_leftover_server(home)
        ollama.kill()
        ollama.wait(timeout=10)


def found_at(document: dict, url: str) -> dict:
    matches = [engine for engine in document["engines"] if engine["url"] == url]
    assert len(matches) == 1, (url, document["engines"])
    return matches[0]


def test_discover_finds_both_engines_with_their_kinds(cli, engines):
    server_url, ollama_url = engines
    result = cli("endpoints", "discover", "--json")
    assert result.code == 0, result
    server = found_at(result.json, server_url)
    assert server["kind"] == "modeldeck" and server["models"] == ["tiny@1"], server
    ollama = found_at(result.json, ollama_url)
    assert ollama["kind"] == "ollama" and ollama["version"] == "0.5.7", ollama
    assert LOADED_MODEL in ollama["models"]
    urls = [entry["url"] for entry in result.json["entries"]]
    assert server_url in urls and ollama_url in urls  # neither is in this deck.toml
    text = cli("endpoints", "discover")
    assert "[[endpoints]]" in text.stdout and f'url = "{ollama_url}"' in text.stdout, text


def test_add_appends_valid_toml_keeping_comments_and_never_duplicates(cli, deck_home, engines):
    server_url, ollama_url = engines
    deck_home.mkdir(parents=True, exist_ok=True)
    original = COMMENTED_DECK.format(port=free_port(), ollama_port=ollama_url.rsplit(":", 1)[1])
    config = deck_home / "deck.toml"
    config.write_text(original)
    first = cli("endpoints", "discover", "--add", "--json")
    assert first.code == 0, first
    # the Ollama configured as localhost:PORT is the one found at 127.0.0.1:PORT
    assert found_at(first.json, ollama_url)["configured_as"] == "my-ollama"
    assert first.json["added"] and ollama_url not in [e["url"] for e in first.json["entries"]]
    written = config.read_text()
    assert written.startswith(original), written  # comments and layout as the user wrote them
    endpoints = tomllib.loads(written)["endpoints"]
    added = [entry for entry in endpoints if entry["url"] == server_url]
    assert [entry["kind"] for entry in added] == ["modeldeck"], endpoints
    assert cli("endpoints", "list", "--json").code == 0  # the deck loads
    second = cli("endpoints", "discover", "--add", "--json")
    assert second.code == 0, second
    assert found_at(second.json, server_url)["configured_as"] == added[0]["name"]
    urls = [entry["url"] for entry in tomllib.loads(config.read_text())["endpoints"]]
    assert urls.count(server_url) == 1 and len(urls) == len(set(urls)), urls


@pytest.mark.parametrize("text, said", [
    ('# mine\n[[endpoints]]\nname = "x"\nkind = "nope"\nurl = "http://h:1"\n', "kind"),
    # valid, but an inline array: there is no [[endpoints]] list to append a table to
    ('# mine\nendpoints = []\n', "not an array of [[endpoints]] tables")])
def test_a_deck_toml_that_cannot_take_entries_is_left_as_it_was(cli, deck_home, engines, text,
                                                               said):
    deck_home.mkdir(parents=True, exist_ok=True)
    config = deck_home / "deck.toml"
    config.write_text(text)
    before = config.read_bytes()
    result = cli("endpoints", "discover", "--add")
    assert result.code == 2 and said in result.stderr, result
    assert config.read_bytes() == before
    assert list(deck_home.iterdir()) == [config]  # no temporary file left either


def test_ollama_kind_shows_loaded_models_and_says_throughput_is_not_observable(
        cli, deck_home: Path, engines):
    _, ollama_url = engines
    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text(
        f'[[endpoints]]\nname = "ollama"\nkind = "ollama"\nurl = "{ollama_url}"\n')
    result = cli("endpoints", "check", "--json")
    assert result.code == 0, result
    (endpoint,) = result.json["endpoints"]
    assert endpoint["status"] == "up" and endpoint["throughput_observable"] is False, endpoint
    assert "throughput not observable" in endpoint["reason"]
    assert endpoint["tokens_per_s"] is None and endpoint["requests_per_s"] is None  # not 0
    (loaded,) = endpoint["loaded_models"]
    assert loaded == {"name": LOADED_MODEL, "size_bytes": 1800000000, "vram_bytes": 1600000000,
                      "expires_at": "2026-11-26T04:10:00.000000Z"}
    text = cli("endpoints", "check").stdout
    assert LOADED_MODEL in text and "throughput not observable" in text and "1.5 GiB" in text, text
