"""Compress, load in a fresh process with engine.compression.load_model, generate, and compare
with what the in-memory compressed model produced. One child process checks every variant (a
process start with torch costs seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.compression.spec import spec_for

PROMPT = "The keeper of the lighthouse"
VARIANTS = {
    "int8": ("int8", {}),
    "int8-keep-head": ("int8", {"keep": ["lm_head"]}),  # embedding and tied head stay bf16
    "prune-heads": ("prune", {"sparsity": 0.5, "structured": "heads"}),
    "distill": ("distill", {"steps": 2, "student_layers": 1}),
}
CHILD = """
import json, sys, torch
from engine.modelio.loader import load_model, load_tokenizer
results = {}
for directory in sys.argv[2:]:
    model, tokenizer = load_model(directory), load_tokenizer(directory)
    ids = tokenizer([sys.argv[1]], return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model(ids).logits[0, -1].float().tolist()
        tokens = model.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
    results[directory] = {"tokens": tokens, "logits": logits}
print(json.dumps(results))
"""


def generate_in_memory(model, tokenizer) -> dict:
    import torch

    ids = tokenizer([PROMPT], return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model(ids).logits[0, -1].float()
        tokens = model.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
    return {"tokens": tokens, "logits": logits}


@pytest.fixture(scope="module")
def round_trip(trained_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """variant -> (in-memory result, stored directory, result loaded in a new process)."""
    import torch

    from engine.compression.runner import apply_method
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import save_model

    root = tmp_path_factory.mktemp("roundtrip")
    expected, directories = {}, {}
    for name, (method, options) in VARIANTS.items():
        torch.manual_seed(0)
        model, tokenizer = load_model(trained_tiny_dir), load_tokenizer(trained_tiny_dir)
        spec = spec_for("tiny@1", "model", "LlamaForCausalLM", method, options)
        compressed, marker, _ = apply_method(model, tokenizer, spec, lambda *a, **k: None)
        expected[name] = generate_in_memory(compressed, tokenizer)
        directories[name] = save_model(compressed, tokenizer, root / name, marker)
    child = subprocess.run([sys.executable, "-c", CHILD, PROMPT, *map(str, directories.values())],
                           capture_output=True, text=True, timeout=240,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr[-2000:]
    loaded = json.loads(child.stdout.strip().splitlines()[-1])
    return {name: (expected[name], directories[name], loaded[str(directories[name])])
            for name in VARIANTS}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compressed_version_loads_in_a_new_process(round_trip, variant):
    import torch

    expected, directory, loaded = round_trip[variant]
    assert not [p for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    assert loaded["tokens"] == expected["tokens"]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected["logits"],
                               rtol=1e-4, atol=1e-4)
