"""`modeldeck compress`: bad input exits 2 with nothing written; a real detached job with --wait
registers the version and the report `models show` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_modeldeck


@pytest.fixture
def imported(cli, trained_tiny_dir: Path):
    assert cli("models", "import", str(trained_tiny_dir), "--name", "tiny").code == 0
    return cli


@pytest.mark.parametrize("arguments,message", [
    (["--method", "zip"], "unknown compression method 'zip'"),
    (["--method", "int8", "--sparsity", "0.5"], "--sparsity does not apply to --method int8"),
    (["--method", "prune", "--sparsity", "1.5"], "--sparsity must be between 0 and 1"),
    (["--method", "prune", "--structured", "rows"], "--structured must be 'mlp' or 'heads'"),
    (["--method", "distill", "--student-layers", "7"], "--student-layers must be between 1 and 1 (tiny@1 has 2 layers)"),
    (["--method", "bf16", "--eval", "/nonexistent/eval.txt"], "--eval /nonexistent/eval.txt: no such file"),
    (["--method", "distill", "--recover-steps", "3"], "--recover-steps does not apply"),
])
def test_bad_options_exit_2_and_write_nothing(imported, deck_home, arguments, message):
    result = imported("compress", "tiny@1", *arguments, "--json")
    assert result.code == 2, result
    assert message in result.json["error"]["message"]
    assert not (deck_home / "jobs").exists() or not list((deck_home / "jobs").iterdir())
    assert [v["ref"] for v in imported("models", "list", "--json").json["versions"]] == ["tiny@1"]


def test_unknown_version_exits_2(imported):
    result = imported("compress", "tiny@9", "--method", "int8")
    assert result.code == 2 and "tiny@9" in result.stderr


def test_a_model_the_method_cannot_apply_to_exits_2(cli, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(directory)
    assert cli("models", "import", str(directory), "--name", "g").code == 0
    result = cli("compress", "g@1", "--method", "distill", "--json")
    assert result.code == 2
    assert "needs a Llama-style decoder" in result.json["error"]["message"]


@pytest.mark.slow  # two detached processes importing torch
def test_compress_wait_runs_a_job_and_registers_the_version(imported, deck_home):
    result = run_modeldeck("compress", "tiny@1", "--method", "int8", "--decode-tokens", "8",
                           "--wait", "--json", home=deck_home, timeout=240)
    assert result.code == 0, result
    document = result.json
    assert document["job"]["state"] == "finished" and document["job"]["kind"] == "compress"
    assert document["version"]["ref"] == "tiny@2"
    assert document["report"]["verdict"] in ("accepted", "rejected")
    shown = imported("models", "show", "tiny@2", "--json").json["model"]
    assert shown["lineage"]["method"] == "int8" and shown["parent_version"] == 1
    assert shown["metrics"]["compression"]["result"] == document["report"]["result"]
    events = (Path(document["job"]["directory"]) / "events.jsonl").read_text()
    assert '"phase": "evaluate-parent"' in events and '"type": "registered"' in events


def test_deck_toml_compress_defaults_apply_and_options_override(imported, deck_home):
    """[compress] in deck.toml picks the method and threshold; nothing writes when it is bad."""
    (deck_home / "deck.toml").write_text('[compress]\nmethod = "prune"\nmax_ppl_increase = 0.5\n')
    result = imported("compress", "tiny@1", "--structured", "rows", "--json")
    assert result.code == 2 and "--structured must be" in result.json["error"]["message"]
    result = imported("compress", "tiny@1", "--sparsity", "0.8", "--decode-tokens", "4",
                      "--wait", "--json")
    assert result.code == 0, result
    report = result.json["report"]
    assert result.json["version"]["lineage"]["method"] == "prune"
    assert report["max_ppl_increase_pct"] == 0.5
    assert (report["verdict"], result.json["version"]["status"]) == ("rejected", "rejected")
    deploy = imported("deploy", "tiny@2", "--yes", "--json")
    assert deploy.code == 2 and "rejected" in deploy.json["error"]["message"]


@pytest.mark.slow  # a detached job importing torch
def test_a_running_compress_job_can_be_cancelled(imported, deck):
    from engine import actions, jobs

    started = actions.compress(deck, actions.CompressRequest(
        "tiny@1", "distill", {"steps": 100000, "decode_tokens": 4}))
    assert started.version is None and started.job.kind == "compress"
    for event in jobs.follow_events(deck, started.job.id, poll_s=0.1):
        if event.get("type") == "progress":  # training is under way: cancel mid-run
            break
    cancelled = jobs.cancel_job(deck, started.job.id, grace_s=20)
    assert cancelled.state == "cancelled"
    assert [v.ref for v in deck.registry.versions("tiny")] == ["tiny@1"]
