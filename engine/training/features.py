"""Examples -> token ids and labels (imports transformers' tokenizer only through its argument).

Labels of -100 are ignored by the loss: prompts and non-assistant chat turns are masked so the
model learns only what it should produce.
"""

from __future__ import annotations

from typing import Any

from engine.training.data import Dataset, Example

IGNORE = -100


def build_features(dataset: Dataset, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """One feature dict per example; rows left with nothing to learn after truncation are dropped."""
    label_ids = {name: index for index, name in enumerate(dataset.labels)}
    features = []
    for example in dataset.examples:
        feature: dict[str, Any] | None
        if dataset.format == "classification":
            feature = _classification(example, tokenizer, max_length, label_ids)
        elif dataset.format == "prompt-completion":
            feature = _prompt_completion(example, tokenizer, max_length)
        elif dataset.format == "chat":
            feature = _chat(example, tokenizer, max_length)
        else:
            feature = _text(example, tokenizer, max_length)
        if feature is not None:
            features.append(feature)
    return features


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _with_eos(tokenizer: Any, ids: list[int]) -> list[int]:
    eos = tokenizer.eos_token_id
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def _pack(input_ids: list[int], labels: list[int], max_length: int) -> dict[str, Any] | None:
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if sum(1 for label in labels if label != IGNORE) < 2:  # a shifted loss needs two targets
        return None
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def _text(example: Example, tokenizer: Any, max_length: int) -> dict[str, Any] | None:
    ids = _with_eos(tokenizer, _ids(tokenizer, example.fields["text"], special=True))
    return _pack(ids, list(ids), max_length)


def _prompt_completion(example: Example, tokenizer: Any, max_length: int) -> dict[str, Any] | None:
    prompt = _ids(tokenizer, example.fields["prompt"], special=True)
    completion = _with_eos(tokenizer, _ids(tokenizer, example.fields["completion"], special=False))
    return _pack(prompt + completion, [IGNORE] * len(prompt) + completion, max_length)


def _chat(example: Example, tokenizer: Any, max_length: int) -> dict[str, Any] | None:
    """Render growing prefixes of the conversation; each turn's new text is one segment."""
    messages = example.fields["messages"]
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for count, message in enumerate(messages, start=1):
        text = tokenizer.apply_chat_template(messages[:count], tokenize=False)
        segment, rendered = text[len(rendered):], text
        ids = _ids(tokenizer, segment, special=False)
        input_ids += ids
        labels += ids if message["role"] == "assistant" else [IGNORE] * len(ids)
    return _pack(input_ids, labels, max_length)


def _classification(example: Example, tokenizer: Any, max_length: int,
                    label_ids: dict[str, int]) -> dict[str, Any]:
    ids = _ids(tokenizer, example.fields["text"], special=True)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": label_ids[str(example.fields["label"])]}


def split_eval(features: list[dict[str, Any]], share: float, seed: int
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval): a seeded shuffle holds out `share` of the rows (at least one when share > 0)."""
    import random

    if share <= 0 or len(features) < 2:
        return features, []
    order = list(range(len(features)))
    random.Random(seed).shuffle(order)
    held = max(1, int(round(len(features) * share)))
    held_out = set(order[:held])
    return ([f for i, f in enumerate(features) if i not in held_out],
            [f for i, f in enumerate(features) if i in held_out])
