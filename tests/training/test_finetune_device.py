"""Fine-tune on `--device cuda:N`: the job's worker is pinned to GPU N by CUDA_VISIBLE_DEVICES
(set where engine.jobs spawns it) and trains on "cuda", with precision from the one policy.
The machine with GPUs is described (engine.validate's count), the spawn is captured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import actions, jobs
from engine.errors import BadInput
from engine.finetune_settings import settings_from_dict
from engine.modelio.devices import Machine
from engine.training.worker import device_and_precision


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA devices, as the CLI boundary counts them; the detached spawn is
    recorded instead of run (there is no GPU here for the worker to train on)."""
    from engine import validate

    spawned: list[Path] = []
    monkeypatch.setattr(validate, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(jobs, "_spawn_supervisor", lambda paths, directory: spawned.append(directory))
    return spawned


def test_a_cuda_1_finetune_pins_its_worker_to_gpu_1(tiny_deck, text_data, two_gpus, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    request = actions.FinetuneRequest("tiny@1", text_data, overrides={"steps": 2, "device": "cuda:1"})
    job = actions.finetune(tiny_deck, request).job
    document = json.loads((two_gpus[0] / "spec.json").read_text())
    assert document["device"] == "cuda:1" and job.spec["settings"]["device"] == "cuda:1"
    environment = jobs.worker_environment(document, {"PATH": "/usr/bin"}, tiny_deck.paths.home)
    assert environment["CUDA_VISIBLE_DEVICES"] == "1"
    assert environment["PATH"] == "/usr/bin"
    context = jobs.JobContext(job.id, two_gpus[0], "finetune", document["spec"],
                              tiny_deck.paths.home, 1, requested_device=document["device"])
    assert context.device == "cuda"  # the only GPU the pinned worker sees is GPU 1
    settings = settings_from_dict(document["spec"]["settings"])
    assert device_and_precision(context, settings, Machine(cuda_count=1, cuda_bf16=True)) == (False, "bf16")
    assert device_and_precision(context, settings, Machine(cuda_count=1)) == (False, "fp16")


def test_an_inherited_visible_list_is_indexed_not_replaced():
    document = {"device": "cuda:1"}
    inherited = {"CUDA_VISIBLE_DEVICES": "4,6"}
    assert jobs.worker_environment(document, inherited, Path("/d"))["CUDA_VISIBLE_DEVICES"] == "6"
    with pytest.raises(BadInput, match="leaves 1 CUDA device"):
        jobs.worker_environment({"device": "cuda:1"}, {"CUDA_VISIBLE_DEVICES": "4"}, Path("/d"))


@pytest.mark.parametrize("device", [None, "auto", "cpu", "cuda"])
def test_no_pin_unless_a_gpu_is_named(device):
    environment = jobs.worker_environment({"device": device}, {"CUDA_VISIBLE_DEVICES": "3"}, Path("/d"))
    assert environment["CUDA_VISIBLE_DEVICES"] == "3"  # the user's own choice stays
    assert "CUDA_VISIBLE_DEVICES" not in jobs.worker_environment({"device": device}, {}, Path("/d"))


def test_cpu_keeps_use_cpu_and_fp32(tmp_path):
    settings = settings_from_dict({"device": "cpu"})
    context = jobs.JobContext("j", tmp_path, "finetune", {}, tmp_path, 1, requested_device="cpu")
    assert device_and_precision(context, settings, Machine(cpu_bf16=True)) == (True, "fp32")
    auto = jobs.JobContext("j", tmp_path, "finetune", {}, tmp_path, 1, requested_device="auto")
    assert device_and_precision(auto, settings_from_dict({}), Machine()) == (True, "fp32")
    assert device_and_precision(auto, settings_from_dict({}), Machine(1, True)) == (False, "bf16")


def test_cuda_n_with_several_processes_is_refused_before_a_job(tiny_deck, text_data, two_gpus):
    request = actions.FinetuneRequest("tiny@1", text_data, nproc=2,
                                      overrides={"steps": 2, "device": "cuda:1"})
    with pytest.raises(BadInput, match="pins one GPU"):
        actions.finetune(tiny_deck, request)
    assert not two_gpus and not list(tiny_deck.paths.jobs.glob("*"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_on_a_cuda_machine_the_trainer_runs_on_the_gpu(tiny_deck, tmp_path):
    from engine.training.worker import training_arguments

    last = f"cuda:{torch.cuda.device_count() - 1}"
    settings = settings_from_dict({"device": last, "steps": 1})
    context = jobs.JobContext("j", tmp_path, "finetune", {}, tmp_path, 1, requested_device=last)
    arguments = training_arguments(context, settings, False)
    assert arguments.device.type == "cuda" and not arguments.use_cpu
    assert arguments.bf16 == torch.cuda.is_bf16_supported()
    assert arguments.fp16 == (not torch.cuda.is_bf16_supported())
