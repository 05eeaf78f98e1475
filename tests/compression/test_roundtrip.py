"""Compress, load in a fresh process with engine.compression.load_model, generate, and compare
with what the in-memory compressed model produced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.compression.spec import spec_for

PROMPT = "The keeper of the lighthouse"
CHILD = """
import json, sys, torch
from engine.compression import load_model, load_tokenizer
model, tokenizer = load_model(sys.argv[1]), load_tokenizer(sys.argv[1])
ids = tokenizer([sys.argv[2]], return_tensors="pt").input_ids
with torch.inference_mode():
    logits = model(ids).logits[0, -1].float().tolist()
    tokens = model.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
print(json.dumps({"tokens": tokens, "logits": logits, "class": type(model).__name__}))
"""


def in_memory(model, tokenizer) -> dict:
    import torch

    ids = tokenizer([PROMPT], return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model(ids).logits[0, -1].float()
        tokens = model.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
    return {"tokens": tokens, "logits": logits}


@pytest.mark.parametrize("method,options", [
    ("int8", {}),
    ("prune", {"sparsity": 0.5, "structured": "heads"}),
    ("distill", {"steps": 2, "student_layers": 1}),
])
def test_compressed_version_loads_in_a_new_process(trained_tiny_dir, tmp_path, method, options):
    import torch

    from engine.compression.runner import apply_method
    from engine.compression.storage import load_model, load_tokenizer, save_model

    torch.manual_seed(0)
    model, tokenizer = load_model(trained_tiny_dir), load_tokenizer(trained_tiny_dir)
    spec = spec_for("tiny@1", "model", "LlamaForCausalLM", method, options)
    compressed, marker, _ = apply_method(model, tokenizer, spec, lambda *a, **k: None)
    expected = in_memory(compressed, tokenizer)
    directory = save_model(compressed, tokenizer, tmp_path / "stored", marker)
    assert not [p for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    child = subprocess.run([sys.executable, "-c", CHILD, str(directory), PROMPT],
                           capture_output=True, text=True, timeout=180,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr[-2000:]
    loaded = json.loads(child.stdout.strip().splitlines()[-1])
    assert loaded["tokens"] == expected["tokens"]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected["logits"],
                               rtol=1e-4, atol=1e-4)
