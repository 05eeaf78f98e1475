"""A tiny Llama trained for a few hundred steps on the shipped corpus.

A randomly initialised model's next-token distributions are nearly flat and prompt-blind, so
a broken mask or wrong positions still give the same greedy text; after training they are
peaked and depend on the context, and such bugs move the logits far beyond fp32 noise.
"""

from __future__ import annotations

from pathlib import Path

STEPS = 200


def build_trained_tiny(destination: Path, steps: int = STEPS) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.demo import CORPUS, build_tiny_model

    if (destination / "trained").exists():
        return destination
    build_tiny_model(destination)
    tokenizer = AutoTokenizer.from_pretrained(destination)
    model = AutoModelForCausalLM.from_pretrained(destination, dtype=torch.float32)
    ids = torch.tensor(tokenizer(CORPUS.read_text()).input_ids)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    window, batch = 32, 8
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - window - 1, (batch,), generator=generator)
        inputs = torch.stack([ids[s:s + window] for s in starts.tolist()])
        loss = model(input_ids=inputs, labels=inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(destination)
    (destination / "trained").write_text(f"{steps} steps, final loss {loss.item():.3f}\n")
    return destination
