"""Compression runs and measures on the device the result will serve on: `--device` (default:
deck.toml [serve] device), refused in one line before a job exists when the machine lacks it,
and named in the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.compression.runner import compress_version
from engine.compression.spec import spec_for


@pytest.fixture
def imported(cli, trained_tiny_dir: Path):
    assert cli("models", "import", str(trained_tiny_dir), "--name", "tiny").code == 0
    return cli


def nothing_written(cli, deck_home: Path) -> bool:
    no_jobs = not (deck_home / "jobs").exists() or not list((deck_home / "jobs").iterdir())
    versions = [v["ref"] for v in cli("models", "list", "--json").json["versions"]]
    return no_jobs and versions == ["tiny@1"]


@pytest.mark.skipif(torch.cuda.device_count() > 3, reason="this machine has a cuda:3")
def test_a_gpu_this_machine_lacks_exits_2_with_one_line(imported, deck_home):
    result = imported("compress", "tiny@1", "--method", "int8", "--device", "cuda:3")
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda:3: this machine has" in lines[0], result.stderr
    assert nothing_written(imported, deck_home)


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="this machine has a cuda:1")
def test_the_serve_device_is_the_default_and_is_checked_too(imported, deck_home):
    toml = deck_home / "deck.toml"
    toml.write_text((toml.read_text() if toml.exists() else "") + '\n[serve]\ndevice = "cuda:1"\n')
    result = imported("compress", "tiny@1", "--method", "int8", "--json")
    assert result.code == 2
    assert "device cuda:1: this machine has" in result.json["error"]["message"]
    assert nothing_written(imported, deck_home)


def test_a_cpu_compression_report_names_the_cpu(tiny_deck, tmp_path):
    spec = spec_for("tiny@1", "model", "LlamaForCausalLM", "int8", {"decode_tokens": 4})
    assert spec.device == "auto"
    outcome = compress_version(tiny_deck, spec, tmp_path / "work", lambda *_, **__: None,
                               device="cpu")
    report = outcome["report"]
    assert (report["device"], report["device_name"]) == ("cpu", "cpu")
    stored = tiny_deck.registry.resolve(outcome["version"]).metrics["compression"]
    assert stored["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_on_a_cuda_machine_it_measures_on_the_gpu(tiny_deck, tmp_path):
    spec = spec_for("tiny@1", "model", "LlamaForCausalLM", "int8", {"decode_tokens": 4})
    from dataclasses import replace

    last = f"cuda:{torch.cuda.device_count() - 1}"
    outcome = compress_version(tiny_deck, replace(spec, device=last), tmp_path / "work",
                               lambda *_, **__: None)
    report = outcome["report"]
    assert report["device"] == last
    assert report["device_name"] == torch.cuda.get_device_name(torch.device(last))
    assert report["result"]["perplexity"] > 0 and report["result"]["decode_tokens_per_s"] > 0
