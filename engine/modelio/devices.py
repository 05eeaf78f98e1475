"""One device and dtype policy for serve, fine-tune and compress.

The decisions are pure functions over a described machine (`Machine`: how many CUDA devices,
whether the GPU and the CPU compute bf16 fast), so every branch is testable on any box;
`this_machine()` describes the real one (it imports torch). The device's syntax and the CUDA
count check are engine.validate.parse_device's, called here with the machine's count, so the
CLI boundary and the runtime refuse the same devices with the same line.

Jobs (fine-tune, compress) that ask for `cuda:N` get `CUDA_VISIBLE_DEVICES=N` in their worker's
environment and use "cuda" inside (engine.jobs.pinned_environment and worker_device, where workers
are spawned): the Trainer and every library under it then land on GPU N, not cuda:0.

Nothing here imports torch at import time (`import engine` stays light).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import BadInput

DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Machine:
    """What the policy needs to know about a machine."""

    cuda_count: int = 0  # CUDA devices this process can see
    cuda_bf16: bool = False  # torch.cuda.is_bf16_supported() (Ampere and later)
    cpu_bf16: bool = False  # AVX512-BF16 or AMX: bf16 matmuls are fast on the CPU


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX makes bf16 matmuls fast on the CPU; without them bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def this_machine() -> Machine:
    import torch

    available = torch.cuda.is_available()
    return Machine(cuda_count=int(torch.cuda.device_count()) if available else 0,
                   cuda_bf16=bool(available and torch.cuda.is_bf16_supported()),
                   cpu_bf16=cpu_has_bf16())


# ---- the decisions (pure) ----------------------------------------------------------------------


def choose_device(requested: str, machine: Machine) -> str:
    """The device to use: auto is the first GPU when there is one, else the CPU; an explicit
    device must exist (cuda:N with N past the count is BadInput, parse_device's line)."""
    from engine.validate import parse_device

    device = parse_device(requested, cuda_count=machine.cuda_count)
    if device == "auto":
        return "cuda" if machine.cuda_count > 0 else "cpu"
    return device


def choose_dtype(requested: str, device: str, machine: Machine) -> str:
    """auto: bf16 on a GPU that has it (float16 on one that does not), bf16 on a CPU with
    AVX512-BF16/AMX, else float32. An explicit bfloat16 on a GPU without it is refused."""
    if requested != "auto":
        if requested not in DTYPE_NAMES:
            raise BadInput(f"unknown dtype {requested!r} (use auto, {', '.join(DTYPE_NAMES)})")
        if requested == "bfloat16" and device.startswith("cuda") and not machine.cuda_bf16:
            raise BadInput(f"dtype bfloat16: {device} has no bf16 support (use float16 or auto)")
        return requested
    if device.startswith("cuda"):
        return "bfloat16" if machine.cuda_bf16 else "float16"
    if device == "cpu" and machine.cpu_bf16:
        return "bfloat16"
    return "float32"


def training_precision(precision: str, device: str, machine: Machine) -> str:
    """fp32 | bf16 | fp16 for the Trainer. auto on a GPU follows choose_dtype (mixed precision
    over fp32 master weights); auto on the CPU stays fp32: CPU autocast does not speed training
    up enough to be worth the changed numerics."""
    if precision == "fp32":
        return "fp32"
    if precision == "bf16":
        if device.startswith("cuda") and not machine.cuda_bf16:
            raise BadInput(f"precision bf16: {device} has no bf16 support (use auto or fp32)")
        return "bf16"
    if not device.startswith("cuda"):
        return "fp32"
    return {"bfloat16": "bf16", "float16": "fp16"}[choose_dtype("auto", device, machine)]


# ---- the real machine ------------------------------------------------------------------------


def resolve_device(requested: str, machine: Machine | None = None) -> str:
    return choose_device(requested, machine or this_machine())


def resolve_dtype(requested: str, device: str, machine: Machine | None = None) -> str:
    return choose_dtype(requested, device, machine or this_machine())
