"""The fused step's GEMM thread count follows a real CPU-bound neighbour: it leaves the busy core
while the neighbour runs and takes it back when the neighbour ends (engine.serving.threads).
Measured on the real scheduler and step, bf16 through modeldeck's kernels (oneDNN, or plain
`F.linear`, where the CPU has no AVX512-BF16), with a real busy process beside it, bounded to a few seconds.

The serving runs in a fresh process, as a server's does: in the test process, earlier tests ran
two-thread GEMMs on the main thread, and a second OpenMP pool there makes libgomp stop spinning
(more managed threads than cores), which made every two-thread step here slower than one thread
(measured: 3.4 against 2.3 ms a step; the count then rightly went to one)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import pytest

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
pytestmark = [
    pytest.mark.skipif(CORES != 2, reason="the neighbour takes one core of exactly two"),
    pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat (not Linux)"),
]
SPIN = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
ROOT = Path(__file__).resolve().parents[2]


def test_the_gemms_leave_a_busy_core_and_take_it_back(tmp_path):
    # A second attempt only when the first saw the phases go wrong: the suite starts a real
    # vLLM in the background (its start takes ~2 minutes of bursty CPU) while other tests run,
    # and once in CI this test ran beside it and saw the count go back to two threads with the
    # neighbour still busy. A fault in the measuring fails every attempt (seen: with no trial of
    # more threads, both attempts stayed on one thread after the neighbour left).
    for attempt in range(2):
        seen = _run_phases(tmp_path / f"attempt{attempt}")
        failure = _phases_gone_wrong(seen)
        if failure is None:
            break
        print(f"attempt {attempt + 1}: {failure}: {seen}")
    assert failure is None, f"{failure}: {seen}"
    print(f"left the busy core after {seen['left_after_s']:.2f} s, back on both "
          f"{seen['back_after_s']:.2f} s after the neighbour ended")


def _run_phases(directory: Path) -> dict:
    directory.mkdir()
    result = subprocess.run([sys.executable, "-c", "from tests.serving.test_gemm_threads_neighbour"
                             f" import phases; phases({str(directory)!r})"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _phases_gone_wrong(seen: dict) -> str | None:
    # Whichever GEMMs this CPU runs (modeldeck's, oneDNN's, or plain bf16 `F.linear` on a CPU
    # with neither, such as an AVX2-only EPYC), their thread count is the one being measured.
    assert seen["most"] == 2 and "GEMMs on 1 to 2 threads" in seen["reason"], seen["reason"]
    checks = [(seen["quiet"] == 2, "two free cores, yet one thread was chosen"),
              (seen["neighbour"] == 1, "the neighbour's core did not send the GEMMs to one thread"),
              (seen["neighbour_stays"] == 1, "the busy core was taken back while still busy"),
              (seen["after"] == 2, "the neighbour left, yet the GEMMs stayed on one thread")]
    return next((why for held, why in checks if not held), None)


def phases(directory: str) -> None:
    """Serve waves on a small bf16 Llama through each phase; print the count each ended on."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.demo import build_tiny_model
    from engine.serving.scheduler import BatchScheduler

    torch.set_num_threads(1)  # as a CPU server runs: the GEMMs alone get both cores
    model_directory = build_tiny_model(Path(directory) / "tiny", hidden_size=512, layers=4)
    model = AutoModelForCausalLM.from_pretrained(model_directory, dtype=torch.bfloat16).eval()
    scheduler = BatchScheduler(model, AutoTokenizer.from_pretrained(model_directory),
                               max_batch_size=8, context_length=256)
    threads = scheduler.step.threads
    seen = {"most": threads.most, "reason": scheduler.step.reason}
    serve_until(scheduler, lambda: False, 2.0)
    serve_until(scheduler, lambda: threads.chosen == 2, 2.0)  # past a hiccup's trial, if any
    seen["quiet"] = threads.chosen
    neighbour = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        started = time.monotonic()
        serve_until(scheduler, lambda: threads.chosen == 1, 10.0)
        seen["neighbour"], seen["left_after_s"] = threads.chosen, time.monotonic() - started
        serve_until(scheduler, lambda: threads.chosen != 1, 2.0)
        seen["neighbour_stays"] = threads.chosen
    finally:
        neighbour.kill()
        neighbour.wait()
    ended = time.monotonic()
    serve_until(scheduler, lambda: threads.chosen == 2, 10.0)
    seen["after"], seen["back_after_s"] = threads.chosen, time.monotonic() - ended
    scheduler.close(timeout=30)
    print(json.dumps(seen))


def serve_until(scheduler, done, seconds: float) -> None:
    """Waves of 8 greedy requests until done() or `seconds` pass."""
    from engine.serving.scheduler import SamplingParams

    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        events: list[queue.Queue] = [queue.Queue() for _ in range(8)]
        for index, sink in enumerate(events):
            scheduler.submit([5 + index, 17, 42, 9], SamplingParams(max_tokens=40, temperature=0,
                                                                    ignore_eos=True), sink.put)
        for sink in events:
            while sink.get(timeout=30).finish_reason is None:
                pass
