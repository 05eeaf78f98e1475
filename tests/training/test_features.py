"""Token features from each format, with the real tiny tokenizer: what the loss sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.training.data import load_dataset
from engine.training.features import IGNORE, build_features, split_eval


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def features_of(tmp_path: Path, tokenizer, line: str, max_length: int = 256) -> dict:
    path = tmp_path / ("d.txt" if not line.startswith("{") else "d.jsonl")
    path.write_text(line + "\n")
    (feature,) = build_features(load_dataset(path), tokenizer, max_length)
    return feature


def test_text_learns_every_token(tmp_path, tokenizer):
    feature = features_of(tmp_path, tokenizer, '{"text": "the quick brown fox"}')
    assert feature["labels"] == feature["input_ids"]
    assert feature["input_ids"][-1] == tokenizer.eos_token_id


def test_prompt_is_masked_and_completion_learned(tmp_path, tokenizer):
    feature = features_of(tmp_path, tokenizer, '{"prompt": "Question: why?", "completion": " because"}')
    learned = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE]
    assert tokenizer.decode(learned).startswith(" because")
    prompt_length = len(tokenizer("Question: why?")["input_ids"])
    assert feature["labels"][:prompt_length] == [IGNORE] * prompt_length


def test_chat_learns_only_assistant_turns(tmp_path, tokenizer):
    line = ('{"messages": [{"role": "user", "content": "hello there"}, '
            '{"role": "assistant", "content": "general kenobi"}]}')
    feature = features_of(tmp_path, tokenizer, line)
    rendered = tokenizer.decode(feature["input_ids"])
    assert "<|im_start|>user" in rendered and "general kenobi" in rendered
    learned = tokenizer.decode([t for t, label in zip(feature["input_ids"], feature["labels"])
                                if label != IGNORE])
    assert "general kenobi" in learned and "hello there" not in learned


def test_txt_file_and_truncation(tmp_path, tokenizer):
    feature = features_of(tmp_path, tokenizer, "a long paragraph " * 50, max_length=16)
    assert len(feature["input_ids"]) == 16


def test_eval_split_is_seeded_and_disjoint():
    rows = [{"input_ids": [i]} for i in range(20)]
    train, held = split_eval(rows, 0.1, seed=3)
    assert len(held) == 2 and len(train) == 18 and split_eval(rows, 0.1, seed=3) == (train, held)
    assert not {r["input_ids"][0] for r in train} & {r["input_ids"][0] for r in held}
