"""An int8 version (engine.compression's own safetensors layout) deploys to the running server
through the gated swap and answers like any other version."""

from __future__ import annotations

import pytest


@pytest.fixture
def int8_version(two_version_deck, tiny_model_dir, tmp_path):
    from engine import actions
    from engine.compression.runner import apply_method
    from engine.compression.spec import spec_for
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import save_model

    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    spec = spec_for("tiny@1", "model", "LlamaForCausalLM", "int8", {})
    compressed, marker, _ = apply_method(model, tokenizer, spec, lambda *a, **k: None)
    directory = save_model(compressed, tokenizer, tmp_path / "int8", marker)
    return actions.import_model(two_version_deck, actions.ImportRequest(directory, "tiny"))


def test_int8_version_deploys_and_answers(running, int8_version):
    from engine import actions

    assert int8_version.ref == "tiny@3"
    result = actions.deploy(running.deck, actions.DeployRequest("tiny@3", reason="int8"))
    assert result.history.outcome == "ok"
    client = running.openai()
    response = client.completions.with_raw_response.create(
        model="tiny", prompt="The keeper", max_tokens=6, temperature=0)
    assert response.headers["x-modeldeck-version"] == "tiny@3"
    completion = response.parse()
    assert completion.choices[0].text.strip()
    assert completion.usage.completion_tokens == 6 or completion.choices[0].finish_reason == "stop"
