"""`vllm-lora` targets against a contract fake of vLLM's runtime LoRA API (see vllm_contract.py
for why a fake): load under a name, gate, unload the previous adapter; rollback loads it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.targets.vllm_contract import FakeVllm, ServerThread


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory, tiny_model_dir) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dirs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                               init_lora_weights=False))
        out = tmp_path_factory.mktemp(f"adapter{seed}")
        lora.save_pretrained(out)
        dirs.append(out)
    return dirs


@pytest.fixture
def fake_vllm():
    fake = FakeVllm(api_key="vllm-secret-key", broken_adapters=("tiny-lora-v3",))
    with ServerThread(fake.app) as server:
        yield fake, server


@pytest.fixture
def lora_deck(cli, fake_vllm, adapter_dirs, tmp_path, monkeypatch, tiny_model_dir):
    fake, server = fake_vllm
    config = tmp_path / "deck.toml"
    config.write_text(f'[[targets]]\nname = "vllm"\nkind = "vllm-lora"\nurl = "{server.url}"\n'
                      f'lora_dir = "{tmp_path / "shared-adapters"}"\napi_key_env = "VLLM_KEY"\n'
                      f'timeout_s = 5\n[targets.gate]\nprompts = ["Hello", "Hi"]\n')
    monkeypatch.setenv("MODELDECK_CONFIG", str(config))
    monkeypatch.setenv("VLLM_KEY", "vllm-secret-key")
    for directory in adapter_dirs:
        result = cli("models", "import", str(directory), "--name", "tiny-lora", "--json")
        assert result.code == 0, result
        assert result.json["version"]["kind"] == "adapter"
    cli("models", "import", str(tiny_model_dir), "--name", "full-model")
    return fake, tmp_path / "shared-adapters"


def test_deploy_loads_the_adapter_and_unloads_the_previous(cli, lora_deck):
    fake, shared = lora_deck
    assert cli("deploy", "tiny-lora@1", "--target", "vllm", "--yes").code == 0
    assert set(fake.loaded) == {"tiny-lora-v1"}
    assert (shared / "tiny-lora-v1" / "adapter_model.safetensors").exists()
    assert cli("deploy", "tiny-lora@2", "--target", "vllm", "--yes").code == 0
    assert set(fake.loaded) == {"tiny-lora-v2"}
    paths = [path for path, _ in fake.requests]
    assert paths.count("/v1/load_lora_adapter") == 2
    assert paths.count("/v1/unload_lora_adapter") == 1
    back = cli("rollback", "--target", "vllm", "--yes", "--json")
    assert back.code == 0, back
    assert set(fake.loaded) == {"tiny-lora-v1"}


def test_failed_gate_unloads_the_new_adapter_and_keeps_the_old(cli, lora_deck):
    fake, _ = lora_deck
    cli("deploy", "tiny-lora@1", "--target", "vllm", "--yes")
    failed = cli("deploy", "tiny-lora@3", "--target", "vllm", "--yes")
    assert failed.code == 1
    assert "empty completion" in failed.stderr
    assert set(fake.loaded) == {"tiny-lora-v1"}
    history = cli("history", "--target", "vllm", "--json").json["entries"]
    assert [(e["action"], e["version"]) for e in history[:2]] == [("auto-rollback", 1), ("deploy", 3)]


def test_full_model_is_refused_for_a_lora_target(cli, lora_deck):
    fake, _ = lora_deck
    result = cli("deploy", "full-model@1", "--target", "vllm", "--yes")
    assert result.code == 2
    assert "not a LoRA adapter" in result.stderr
    assert fake.loaded == {}
    assert cli("history", "--target", "vllm", "--json").json["entries"] == []


def test_unreachable_vllm_changes_nothing(cli, lora_deck, tmp_path, monkeypatch):
    config = tmp_path / "down.toml"
    config.write_text(f'[[targets]]\nname = "vllm"\nkind = "vllm-lora"\nurl = "http://127.0.0.1:9"\n'
                      f'lora_dir = "{tmp_path}"\ntimeout_s = 1\n')
    monkeypatch.setenv("MODELDECK_CONFIG", str(config))
    result = cli("deploy", "tiny-lora@1", "--target", "vllm", "--yes")
    assert result.code == 1 and "cannot be reached" in result.stderr
    assert cli("history", "--target", "vllm", "--json").json["entries"] == []
