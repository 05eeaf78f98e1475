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
    from engine.compression.training import scratch_run, text_blocks, train

    torch.manual_seed(0)
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    blocks = text_blocks(tokenizer, DEFAULT_TRAIN_TEXT.read_text(), 64)
    with scratch_run(lambda *_, **__: None) as run:  # the same Trainer stack compression uses
        train(model, blocks, run, "pretrain", 60, 3e-3, 8)
    return save_model(model, tokenizer, tmp_path_factory.mktemp("trained") / "tiny-trained")


@pytest.fixture
def tiny_deck(deck, trained_tiny_dir: Path):
    """A deck holding the trained tiny model as tiny@1."""
    from engine import actions

    actions.import_model(deck, actions.ImportRequest(trained_tiny_dir, "tiny"))
    return deck
