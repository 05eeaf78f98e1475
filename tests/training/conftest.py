"""Fine-tuning fixtures: a deck holding the tiny model, dataset writers, and job waiters."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import actions
from tests.training.training_helpers import corpus_lines, write_jsonl


@pytest.fixture
def tiny_deck(deck, tiny_model_dir):
    """The test's deck with the tiny Llama imported as tiny@1."""
    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    return deck


@pytest.fixture
def text_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "text.jsonl", [{"text": line} for line in corpus_lines()])


@pytest.fixture
def prompt_data(tmp_path: Path) -> Path:
    rows = [{"prompt": f"Q: {line[:20]}\nA:", "completion": " " + line[20:]} for line in corpus_lines()]
    return write_jsonl(tmp_path / "pc.jsonl", rows)


@pytest.fixture
def chat_data(tmp_path: Path) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": line[:20]},
                          {"role": "assistant", "content": line[20:]}]} for line in corpus_lines()]
    return write_jsonl(tmp_path / "chat.jsonl", rows)
