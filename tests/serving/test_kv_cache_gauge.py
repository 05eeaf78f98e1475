"""/metrics' KV-cache gauge (the series the console's poller reads for modeldeck endpoints)
follows the slots' fill, per version, and returns to zero when the batch empties."""

from __future__ import annotations

import queue
from pathlib import Path

from engine.remote.metrics import GAUGES_AVERAGED
from engine.serving.metrics import ServerMetrics
from engine.serving.scheduler import BatchScheduler, SamplingParams

GAUGE = "modeldeck_kv_cache_usage_perc"


def test_kv_cache_gauge_tracks_the_cache_and_is_read_by_the_poller(tiny_model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert GAUGE in GAUGES_AVERAGED["kv_cache"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    metrics = ServerMetrics()
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=2, context_length=64,
                               observer=metrics.observer("tiny@1"))
    prompt = tokenizer("Once upon a time").input_ids
    events: queue.Queue = queue.Queue()
    sequence = scheduler.submit(prompt, SamplingParams(max_tokens=50, temperature=0,
                                                       ignore_eos=True), events.put)
    for _ in range(3):
        assert events.get(timeout=30).finish_reason is None
    in_use = metrics.registry.get_sample_value(GAUGE, {"version": "tiny@1"})
    # At least the prompt and the first tokens are cached; at most one whole slot of two.
    assert (len(prompt) + 1) / 128 <= in_use <= 0.5
    sequence.cancel()
    assert scheduler.close(timeout=30)
    assert metrics.registry.get_sample_value(GAUGE, {"version": "tiny@1"}) == 0
    assert f'{GAUGE}{{version="tiny@1"}}' in metrics.exposition().decode()


def test_the_gemm_thread_count_is_on_metrics_while_its_step_lives():
    import gc

    from engine.serving.threads import GemmThreads

    metrics = ServerMetrics()
    threads = GemmThreads(2, busy_elsewhere=lambda: 0.0)
    metrics.watch_gemm_threads("tiny@1", threads)
    metrics.watch_gemm_threads("tiny@2", None)  # a GPU or eager step: no series
    assert metrics.registry.get_sample_value("modeldeck_gemm_threads", {"version": "tiny@1"}) == 2
    threads.chosen, threads.switches = 1, 1  # the measuring moved it
    assert metrics.registry.get_sample_value("modeldeck_gemm_threads", {"version": "tiny@1"}) == 1
    assert metrics.registry.get_sample_value("modeldeck_gemm_thread_switches_total",
                                             {"version": "tiny@1"}) == 1
    assert 'version="tiny@2"' not in metrics.exposition().decode()
    del threads
    gc.collect()
    assert "modeldeck_gemm_threads{" not in metrics.exposition().decode()
