"""Datasets and settings are validated without torch, before any job starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.training.data import load_dataset
from engine.finetune_settings import build_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("line, fmt", [
    ('{"text": "hello world"}', "text"),
    ('{"prompt": "Q?", "completion": "A."}', "prompt-completion"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', "chat"),
    ('{"text": "great", "label": "pos"}', "classification"),
])
def test_each_jsonl_format_is_recognised(tmp_path, line, fmt):
    dataset = load_dataset(write(tmp_path / "d.jsonl", line + "\n\n" + line + "\n"))
    assert dataset.format == fmt and len(dataset.examples) == 2
    assert [e.line for e in dataset.examples] == [1, 3]


def test_txt_paragraphs_are_examples(tmp_path):
    dataset = load_dataset(write(tmp_path / "d.txt", "one\ntwo\n\n\nthree\n"))
    assert dataset.format == "text"
    assert [(e.line, e.fields["text"]) for e in dataset.examples] == [(1, "one\ntwo"), (5, "three")]


@pytest.mark.parametrize("bad, why", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "JSON object"),
    ('{"prompt": "Q?"}', "'completion' must be a string"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ('{"prompt": "Q?", "completion": "A."}', "a prompt-completion row in a text dataset"),
    ('{"text": "  "}', "'text' is empty"),
])
def test_bad_row_names_file_and_line(tmp_path, bad, why):
    path = write(tmp_path / "d.jsonl", '{"text": "fine"}\n' + bad + "\n")
    with pytest.raises(BadInput) as caught:
        load_dataset(path)
    assert f"{path}:2:" in str(caught.value) and why in str(caught.value)
    skipped = load_dataset(path, on_bad_row="skip")
    assert len(skipped.examples) == 1 and [line for line, _ in skipped.skipped] == [2]


@pytest.mark.parametrize("content", ["", "\n\n", '{"oops": 1}\n'])
def test_empty_or_unusable_dataset_is_refused(tmp_path, content):
    path = write(tmp_path / "d.jsonl", content)
    with pytest.raises(BadInput, match="no usable rows|expected a 'text'"):
        load_dataset(path, on_bad_row="skip")


def test_missing_and_binary_files_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "b.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match="not UTF-8"):
        load_dataset(tmp_path / "b.jsonl")


def test_settings_layering_and_validation(tmp_path):
    config = write(tmp_path / "ft.toml", '[finetune]\nmethod = "full"\nepochs = 2\nlora-rank = 4\n')
    settings = build_settings(config, {"steps": 7, "learning_rate": None})
    assert (settings.method, settings.steps, settings.epochs, settings.lora_rank) == ("full", 7, None, 4)
    assert settings.effective_lr == 5e-5
    with pytest.raises(BadInput, match="unknown setting 'lora_rnak'"):
        build_settings(write(tmp_path / "bad.toml", "lora_rnak = 3\n"), {})
    with pytest.raises(BadInput, match="method must be one of"):
        build_settings(None, {"method": "magic"})
    with pytest.raises(BadInput, match="batch-size must be at least 1"):
        build_settings(None, {"batch_size": 0})


def test_deck_toml_defaults_are_the_lowest_layer(tmp_path):
    deck_defaults = {"seq_len": 128, "lora_r": 4, "epochs": 3.0, "learning_rate": 1e-3}
    config = write(tmp_path / "ft.toml", "steps = 9\n")
    settings = build_settings(config, {"learning_rate": 5e-4}, deck_defaults)
    assert (settings.max_length, settings.lora_rank, settings.steps, settings.epochs) == (128, 4, 9, None)
    assert settings.learning_rate == 5e-4
    both = build_settings(None, {"steps": 5, "epochs": 2.0})  # within one layer, steps wins
    assert (both.steps, both.epochs) == (5, None)


def test_sample_configs_are_valid():
    for path in sorted((Path(__file__).resolve().parents[2] / "sample_configs").glob("finetune-*.toml")):
        settings = build_settings(path, {})
        assert settings.method in path.stem
