"""A tiny model trained briefly on the shipped corpus, so that perplexity on the held-out eval
text means something (an untrained model sits at about the vocabulary size, and compressing it
cannot make it measurably worse)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained_tiny_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from engine.compression.spec import DEFAULT_TRAIN_TEXT
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import save_model
    from engine.compression.training import text_blocks

    torch.manual_seed(0)
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    blocks = [block["input_ids"] for block in
              text_blocks(tokenizer, DEFAULT_TRAIN_TEXT.read_text(), 64)]
    # a plain loop: this only makes a test model worth compressing (no job, events or files)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(60):
        batch = torch.stack([blocks[(step * 8 + i) % len(blocks)] for i in range(8)])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    return save_model(model, tokenizer, tmp_path_factory.mktemp("trained") / "tiny-trained")


@pytest.fixture
def tiny_deck(deck, trained_tiny_dir: Path):
    """A deck holding the trained tiny model as tiny@1."""
    from engine import actions

    actions.import_model(deck, actions.ImportRequest(trained_tiny_dir, "tiny"))
    return deck
