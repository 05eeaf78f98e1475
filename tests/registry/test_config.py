"""deck.toml: defaults, validation with file and key named, env overrides, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import BadInput

SAMPLES = Path(__file__).resolve().parents[2] / "sample_configs"


def test_absent_file_gives_defaults(deck_home):
    config = load_config()
    assert config.serve.host == "127.0.0.1"
    assert config.target_names == ("local",)


def test_named_file_must_exist(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_env_overrides_scalars(tmp_path, monkeypatch):
    path = tmp_path / "deck.toml"
    path.write_text("[serve]\nport = 9000\n")
    monkeypatch.setenv("MODELDECK_SERVE_PORT", "9100")
    assert load_config(path).serve.port == 9100


def test_errors_name_nested_keys(tmp_path):
    path = tmp_path / "deck.toml"
    path.write_text('[[endpoints]]\nname = "a"\nkind = "vllm"\nurl = "ftp://x"\n')
    with pytest.raises(BadInput, match=r"endpoints\.0\.url"):
        load_config(path)
    path.write_text('[[targets]]\nname = "local"\nkind = "command"\n')
    with pytest.raises(BadInput, match="built in"):
        load_config(path)


def test_secrets_come_from_env_or_file_and_stay_out_of_dumps(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text("file-secret\n")
    path = tmp_path / "deck.toml"
    path.write_text(f'[[endpoints]]\nname = "a"\nkind = "vllm"\nurl = "http://127.0.0.1:1"\n'
                    f'api_key_env = "TEST_KEY"\n\n[[endpoints]]\nname = "b"\nkind = "tgi"\n'
                    f'url = "http://127.0.0.1:2"\napi_key_file = "{key_file}"\n')
    monkeypatch.setenv("TEST_KEY", "env-secret")
    config = load_config(path)
    assert config.endpoints[0].resolve_secret() == "env-secret"
    assert config.endpoints[1].resolve_secret() == "file-secret"
    dumped = config.model_dump_json()
    assert "env-secret" not in dumped and "file-secret" not in dumped


def test_every_sample_config_is_valid():
    samples = sorted(SAMPLES.glob("deck-*.toml"))
    assert len(samples) >= 2, "sample_configs/ should hold deck.toml examples"
    for sample in samples:
        load_config(sample)


def test_a_target_name_that_would_leave_run_locks_is_refused(tmp_path):
    """A target's name becomes run/locks/NAME.lock: `../../x` once wrote outside the deck."""
    config = tmp_path / "deck.toml"
    config.write_text('[[targets]]\nname = "../../x"\nkind = "command"\n'
                      'health_url = "http://127.0.0.1:9/health"\n')
    with pytest.raises(BadInput, match="targets.0.name"):
        load_config(config)


def test_the_light_section_list_matches_the_schema():
    """engine.paths decides, without importing pydantic, whether any override variable is set:
    its list of sections must be exactly the ones engine.config reads variables for."""
    from engine.config import DeckConfig, Section
    from engine.paths import OVERRIDABLE_SECTIONS

    schema_sections = {name for name, field in DeckConfig.model_fields.items()
                       if isinstance(field.annotation, type) and issubclass(field.annotation, Section)}
    assert set(OVERRIDABLE_SECTIONS) == schema_sections


def test_settings_are_given_by_a_file_or_an_override_only(deck_home, tmp_path, monkeypatch):
    """What lets a verb skip validation (Deck.check_config): nothing but the defaults apply."""
    from engine.config import DeckConfig
    from engine.paths import settings_given

    for name in [name for name in os.environ if name.startswith("MODELDECK_")]:
        if name != "MODELDECK_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELDECK_DEBUG", "1")  # not a setting
    assert not settings_given()
    DeckConfig()  # the defaults, used then without validating a file, are valid
    assert settings_given(tmp_path / "absent.toml")  # named: must exist, load_config says so
    monkeypatch.setenv("MODELDECK_ROLLOUT_STEPS", "2")
    assert settings_given()
    monkeypatch.delenv("MODELDECK_ROLLOUT_STEPS")
    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text("")
    assert settings_given()
