"""The fused step's GEMMs run on every core this process may use while the rest of the step stays
on the server's own thread count (bench/decode_step.py measured why)."""

from __future__ import annotations

import os

import pytest

from engine.serving.modelstep import FusedLinear, gemm_threads

CORES = len(os.sched_getaffinity(0))
needs_two_cores = pytest.mark.skipif(CORES < 2, reason="one usable core: no spare core for GEMMs")


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_two_cores
def test_cpu_gemms_get_every_core_only_when_the_server_leaves_one_out(one_thread):
    import torch

    assert gemm_threads(torch.device("cpu")) == CORES
    torch.set_num_threads(CORES)
    assert gemm_threads(torch.device("cpu")) is None  # nothing spare to add
    assert gemm_threads(torch.device("cuda", 0)) is None  # cuBLAS: thread counts mean nothing


@needs_two_cores
def test_a_gemm_runs_on_its_threads_and_hands_back_the_servers_count(one_thread):
    import torch

    linear = torch.nn.Linear(64, 48, bias=True, dtype=torch.float32)
    fused = FusedLinear([linear], threads=CORES)
    seen: list[int] = []
    multiply = fused._multiply

    def spy(hidden):
        seen.append(torch.get_num_threads())
        return multiply(hidden)

    fused._multiply = spy  # type: ignore[method-assign]
    hidden = torch.randn(5, 64)
    with torch.inference_mode():
        output = fused(hidden)
        torch.testing.assert_close(output, linear(hidden))
    assert seen == [CORES]
    assert torch.get_num_threads() == 1  # the rest of the step stays on the server's count
    torch.set_num_threads(CORES)  # another version stepping at the same moment raised it
    with torch.inference_mode():
        fused(hidden)
    assert torch.get_num_threads() == 1  # back to the count the step was built under


def test_without_threads_a_gemm_leaves_the_count_alone(one_thread):
    import torch

    linear = torch.nn.Linear(16, 8, bias=False)
    fused = FusedLinear([linear])
    with torch.inference_mode():
        torch.testing.assert_close(fused(torch.ones(2, 16)), linear(torch.ones(2, 16)))
    assert torch.get_num_threads() == 1
