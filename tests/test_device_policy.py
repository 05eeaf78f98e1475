"""The one device and dtype policy (engine.modelio.devices), over described machines: every
branch runs on any box. The CUDA-only tests check the described machine against the real one."""

from __future__ import annotations

import pytest
import torch

from engine.errors import BadInput
from engine.modelio.devices import (Machine, choose_device, choose_dtype, this_machine,
                                    training_precision)

NO_GPU = Machine(cuda_count=0, cpu_bf16=False)
BF16_CPU = Machine(cuda_count=0, cpu_bf16=True)
AMPERE_X2 = Machine(cuda_count=2, cuda_bf16=True)
TURING = Machine(cuda_count=1, cuda_bf16=False)


@pytest.mark.parametrize("requested, machine, device", [
    ("auto", NO_GPU, "cpu"), ("auto", BF16_CPU, "cpu"), ("auto", AMPERE_X2, "cuda"),
    ("cpu", AMPERE_X2, "cpu"), ("cuda", TURING, "cuda"), ("cuda:1", AMPERE_X2, "cuda:1"),
    (" CUDA:0 ", AMPERE_X2, "cuda:0"),
])
def test_device_choice(requested, machine, device):
    assert choose_device(requested, machine) == device


@pytest.mark.parametrize("requested, machine, message", [
    ("cuda:2", AMPERE_X2, "device cuda:2: this machine has 2 CUDA device(s) (cuda:0 to cuda:1)"),
    ("cuda:3", NO_GPU, "device cuda:3: this machine has no CUDA device"),
    ("cuda", NO_GPU, "device cuda: this machine has no CUDA device"),
    ("tpu", AMPERE_X2, "device must be auto, cpu, cuda or cuda:N"),
])
def test_a_device_the_machine_lacks_is_one_line(requested, machine, message):
    with pytest.raises(BadInput) as caught:
        choose_device(requested, machine)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_runtime_refuses_what_the_cli_boundary_refuses(monkeypatch):
    """parse_device (the CLI's check) and the policy give the same answer for the same count."""
    from engine import validate

    monkeypatch.setattr(validate, "cuda_device_count", lambda: 2)
    for requested in ("cuda:0", "cuda:1", "cuda:2", "cuda:7", "auto", "cpu"):
        try:
            boundary = validate.parse_device(requested)
        except BadInput as error:
            boundary = str(error)
        try:
            runtime = choose_device(requested, AMPERE_X2)
        except BadInput as error:
            runtime = str(error)
        assert runtime == boundary or (requested == "auto" and runtime == "cuda"), requested


@pytest.mark.parametrize("device, machine, dtype", [
    ("cpu", NO_GPU, "float32"), ("cpu", BF16_CPU, "bfloat16"),
    ("cuda", AMPERE_X2, "bfloat16"), ("cuda:1", AMPERE_X2, "bfloat16"),
    ("cuda", TURING, "float16"), ("mps", BF16_CPU, "float32"),
])
def test_auto_dtype_follows_the_hardware(device, machine, dtype):
    assert choose_dtype("auto", device, machine) == dtype


def test_an_explicit_dtype_is_kept_unless_the_gpu_cannot_run_it():
    assert choose_dtype("float16", "cpu", NO_GPU) == "float16"
    assert choose_dtype("bfloat16", "cpu", NO_GPU) == "bfloat16"  # slow, but it runs
    assert choose_dtype("float32", "cuda", AMPERE_X2) == "float32"
    with pytest.raises(BadInput, match="cuda has no bf16 support"):
        choose_dtype("bfloat16", "cuda", TURING)
    with pytest.raises(BadInput, match="unknown dtype 'int4'"):
        choose_dtype("int4", "cpu", NO_GPU)


@pytest.mark.parametrize("precision, device, machine, chosen", [
    ("auto", "cpu", BF16_CPU, "fp32"), ("auto", "cpu", NO_GPU, "fp32"),
    ("auto", "cuda", AMPERE_X2, "bf16"), ("auto", "cuda", TURING, "fp16"),
    ("fp32", "cuda", AMPERE_X2, "fp32"), ("bf16", "cpu", NO_GPU, "bf16"),
    ("bf16", "cuda", AMPERE_X2, "bf16"),
])
def test_training_precision(precision, device, machine, chosen):
    assert training_precision(precision, device, machine) == chosen


def test_bf16_training_on_a_gpu_without_it_is_refused():
    with pytest.raises(BadInput, match="precision bf16: cuda has no bf16 support"):
        training_precision("bf16", "cuda", TURING)


def test_this_machine_without_cuda_is_a_cpu_machine():
    machine = this_machine()
    assert machine.cuda_count == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if not torch.cuda.is_available():
        assert choose_device("auto", machine) == "cpu" and not machine.cuda_bf16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_on_a_cuda_machine_the_policy_agrees_with_torch():
    from engine.modelio.devices import resolve_device, resolve_dtype

    machine = this_machine()
    assert machine.cuda_count == torch.cuda.device_count()
    assert machine.cuda_bf16 == torch.cuda.is_bf16_supported()
    assert resolve_device("auto") == "cuda"
    last = f"cuda:{torch.cuda.device_count() - 1}"
    assert resolve_device(last) == last
    with pytest.raises(BadInput):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert resolve_dtype("auto", "cuda") == expected
    torch.zeros(2, dtype=getattr(torch, expected), device="cuda").sum().item()  # it runs
