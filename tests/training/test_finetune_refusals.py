"""Jobs that can only fail are never created: every refusal is one line (BadInput, exit 2),
raised by the engine's finetune verb before a job directory exists, so the CLI and the
console's form get the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import actions, jobs
from engine.errors import BadInput
from tests.conftest import run_modeldeck


def refused(deck, data: Path, reference: str = "tiny@1", **overrides) -> str:
    request = actions.FinetuneRequest(reference, data, overrides={"steps": 2, **overrides})
    with pytest.raises(BadInput) as caught:
        actions.finetune(deck, request)
    message = str(caught.value)
    assert "\n" not in message
    assert jobs.list_jobs(deck) == [] and not any(deck.paths.jobs.glob("*"))
    return message


@pytest.mark.parametrize("overrides, expected", [
    ({"learning_rate": float("inf")}, "learning rate must be a finite number"),
    ({"learning_rate": float("nan")}, "learning rate must be a finite number"),
    ({"learning_rate": 0.0}, "learning rate must be greater than 0"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"steps": 10**12}, "steps must be at most"),
    ({"steps": None, "epochs": float("inf")}, "epochs must be a finite number"),
    ({"steps": None, "epochs": 1e9}, "epochs must be at most"),
    ({"batch_size": 0}, "batch-size must be at least 1"),
    ({"batch_size": 10**9}, "batch-size must be at most"),
    ({"grad_accum": 10**9}, "grad-accum must be at most"),
    ({"eval_split": float("nan")}, "eval split must be a finite number"),
    ({"max_grad_norm": float("inf")}, "max grad norm must be a finite number"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ({"eval_file": "/nonexistent/eval.jsonl"}, "eval file /nonexistent/eval.jsonl does not exist"),
])
def test_settings_that_can_only_fail_are_refused(tiny_deck, text_data, overrides, expected):
    assert expected in refused(tiny_deck, text_data, **overrides)


def test_a_cuda_device_this_machine_lacks_is_refused(tiny_deck, text_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "no CUDA device" in refused(tiny_deck, text_data, device="cuda")


def test_lora_targets_are_checked_against_the_model(tiny_deck, text_data):
    message = refused(tiny_deck, text_data, lora_targets="q_proj,nonexistent")
    assert "'nonexistent'" in message and "q_proj" in message and "v_proj" in message
    assert "o_proj" in message  # the valid names are listed


def test_lora_targets_that_exist_pass_validation(tiny_deck, text_data):
    from engine.training.preflight import check_lora_targets, read_config

    files = tiny_deck.registry.materialize(tiny_deck.registry.resolve("tiny@1"))
    weights = sorted(files.glob("*.safetensors"))
    check_lora_targets(weights, read_config(files / "config.json"), ("q_proj", "v_proj", "down_proj"))


def test_checking_lora_targets_imports_no_torch(tiny_deck):
    """The console calls the finetune verb in its own process, which never imports torch."""
    import subprocess
    import sys

    from tests.conftest import REPO

    files = tiny_deck.registry.materialize(tiny_deck.registry.resolve("tiny@1"))
    probe = ("import sys, pathlib; from engine.training.preflight import check_lora_targets, read_config; "
             "d = pathlib.Path(sys.argv[1]); "
             "check_lora_targets(sorted(d.glob('*.safetensors')), read_config(d / 'config.json'), ('q_proj',)); "
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", probe, str(files)], cwd=REPO, check=True,
                           capture_output=True, text=True, timeout=60).stdout.strip()
    assert shown == "[]", shown


def test_cli_refuses_with_exit_2_and_one_line(tiny_deck, text_data):
    result = run_modeldeck("finetune", "tiny@1", "--data", str(text_data), "--lr", "inf",
                           home=tiny_deck.paths.home)
    assert result.code == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and "finite" in result.stderr
    assert not any(tiny_deck.paths.jobs.glob("*"))


def test_an_int8_version_is_refused_before_a_job_exists(tiny_deck, text_data, tiny_model_dir, tmp_path):
    """A real int8 version (engine.compression's format) of the tiny model: training it would
    start from random weights (the loader skips qweight/scales), so it is refused up front."""
    from engine.modelio.int8 import quantize_int8
    from engine.modelio.loader import load_model, load_tokenizer
    from engine.modelio.storage import save_model

    model = load_model(tiny_model_dir)
    marker = quantize_int8(model)
    int8_dir = save_model(model, load_tokenizer(tiny_model_dir), tmp_path / "tiny-int8", marker)
    version = actions.import_model(tiny_deck, actions.ImportRequest(int8_dir, "tiny"))
    message = refused(tiny_deck, text_data, reference=version.ref)
    assert "int8-compressed" in message and "fine-tune" in message
    # the parent itself still starts (the refusal is about the version, not the model)
    assert "int8" not in refused(tiny_deck, text_data, reference="tiny@1", steps=0)
