"""The step-level continuous-batching scheduler, driven directly (no HTTP)."""

from __future__ import annotations

import queue
import threading

import pytest

from engine.serving.scheduler import (BatchScheduler, QueueFull, SamplingParams, TokenEvent,
                                      generate_blocking)

PROMPTS = ("The cat", "Once upon a time there was", "1, 2, 3,", "Hello", "A long road to the sea")


class Recorder:
    """Observer that remembers batch sizes (the scheduler's own view of the running batch)."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.outcomes: list[str] = []
        self.first_token_s: list[float] = []
        self.request_s: list[float] = []

    def prompt_tokens(self, count: int) -> None: ...

    def token(self, first: bool, seconds_since_previous: float) -> None:
        if first:
            self.first_token_s.append(seconds_since_previous)

    def finished(self, outcome: str, seconds: float, completion_tokens: int) -> None:
        self.outcomes.append(outcome)
        self.request_s.append(seconds)

    def step(self, batch_size: int, running: int, waiting: int) -> None:
        self.batch_sizes.append(batch_size)


def reference_text(model, tokenizer, prompt: str, max_tokens: int) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, ids.input_ids.shape[1]:], skip_special_tokens=True)


def test_batched_greedy_output_matches_generate_one_at_a_time(tiny):
    model, tokenizer = tiny
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=512)
    results: dict[str, str] = {}

    def ask(prompt: str, max_tokens: int) -> None:
        results[prompt] = generate_blocking(scheduler, tokenizer(prompt).input_ids,
                                            SamplingParams(max_tokens=max_tokens, temperature=0))[0]

    # Different lengths, more prompts than slots: sequences join and leave mid-flight.
    threads = [threading.Thread(target=ask, args=(p, 6 + 5 * i)) for i, p in enumerate(PROMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    scheduler.close()
    for i, prompt in enumerate(PROMPTS):
        assert results[prompt] == reference_text(model, tokenizer, prompt, 6 + 5 * i), prompt


def test_request_arriving_mid_decode_joins_and_leaves_before_the_long_one(tiny):
    model, tokenizer = tiny
    recorder = Recorder()
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=512,
                               observer=recorder)
    long_events: queue.Queue[TokenEvent] = queue.Queue()
    long_sequence = scheduler.submit(tokenizer("The cat").input_ids,
                                     SamplingParams(max_tokens=300, temperature=0), long_events.put)
    for _ in range(3):  # the long request is decoding
        assert long_events.get(timeout=30).finish_reason is None
    short_events: queue.Queue[TokenEvent] = queue.Queue()
    short_sequence = scheduler.submit(tokenizer("Hello").input_ids,
                                      SamplingParams(max_tokens=4, temperature=0), short_events.put)
    while short_events.get(timeout=30).finish_reason is None:
        pass
    assert long_sequence.finished_step is None, "the short request waited for the long one"
    assert short_sequence.admitted_step > long_sequence.admitted_step
    assert short_sequence.finished_step - short_sequence.admitted_step <= 4
    while long_events.get(timeout=60).finish_reason is None:
        pass
    scheduler.close()
    sizes = [size for size in recorder.batch_sizes if size]
    assert 2 in sizes  # they really shared decode steps
    assert sizes[-1] == 1 and sizes.count(1) > 4  # the short one left; the long one ran alone
    assert long_sequence.finished_step > short_sequence.finished_step


def test_latency_counts_from_when_the_request_arrived(tiny):
    """The HTTP layer passes the time the request came in: reading and tokenizing the prompt
    (and waiting for a thread to do it on a busy box) count in TTFT and e2e, as clients see."""
    import time

    model, tokenizer = tiny
    recorder = Recorder()
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=1, context_length=512,
                               observer=recorder)
    ids = tokenizer("Hello").input_ids
    events: queue.Queue[TokenEvent] = queue.Queue()
    scheduler.submit(ids, SamplingParams(max_tokens=2, temperature=0), events.put,
                     arrived_at=time.monotonic() - 5.0)
    while events.get(timeout=30).finish_reason is None:
        pass
    scheduler.close()
    assert recorder.first_token_s[0] >= 5.0 and recorder.request_s[0] >= 5.0


def test_cancelled_sequence_frees_its_slot(tiny):
    model, tokenizer = tiny
    recorder = Recorder()
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=1, max_queue=4,
                               context_length=512, observer=recorder)
    events: queue.Queue[TokenEvent] = queue.Queue()
    hog = scheduler.submit(tokenizer("The cat").input_ids,
                           SamplingParams(max_tokens=400, temperature=0), events.put)
    assert events.get(timeout=30).finish_reason is None
    hog.cancel()
    text, reason = generate_blocking(scheduler, tokenizer("Hello").input_ids,
                                     SamplingParams(max_tokens=3, temperature=0))
    scheduler.close()
    assert reason == "length"
    assert "cancelled" in recorder.outcomes
    assert hog.finished_step is not None and len(hog.generated_ids) < 400


def test_queue_limit_and_context_limit(tiny):
    from engine.errors import BadInput

    model, tokenizer = tiny
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=1, max_queue=0, context_length=64)
    events: queue.Queue[TokenEvent] = queue.Queue()
    running = scheduler.submit(tokenizer("The cat").input_ids,
                               SamplingParams(max_tokens=50, temperature=0), events.put)
    assert events.get(timeout=30).finish_reason is None  # admitted: the queue is empty again
    with pytest.raises(QueueFull):
        scheduler.submit(tokenizer("Hello").input_ids, SamplingParams(max_tokens=2), events.put)
    with pytest.raises(BadInput, match="context is 64 tokens"):
        scheduler.submit(list(range(10, 80)), SamplingParams(max_tokens=2), events.put)
    running.cancel()
    scheduler.close()


def test_every_generated_token_is_an_event_even_one_without_text_yet(tiny):
    """Text held back (here: it could begin a stop string) still reports its token, with empty
    text, at the step that made it: a streaming client's first chunk is not a step late."""
    model, tokenizer = tiny
    scheduler = BatchScheduler(model, tokenizer, context_length=512)
    prompt = tokenizer("Once upon a time").input_ids
    first_piece = ""
    for max_tokens in (1, 2, 3):  # the text of the first token (one token may decode to none)
        first_piece, _ = generate_blocking(scheduler, prompt,
                                           SamplingParams(max_tokens=max_tokens, temperature=0))
        if first_piece:
            break
    assert first_piece
    events: queue.Queue[TokenEvent] = queue.Queue()
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True,
                            stop=(first_piece + "\u0000",))  # never matched, always a prefix
    scheduler.submit(prompt, params, events.put)
    seen = [events.get(timeout=30)]
    while seen[-1].finish_reason is None:
        seen.append(events.get(timeout=30))
    scheduler.close()
    tokens = [event for event in seen if event.finish_reason is None]
    assert tokens[0].text == ""  # the first token's text was held back, its event was not
    assert len(tokens) >= params.max_tokens - 1  # the last token's text may ride the final event
    assert "".join(event.text for event in seen).startswith(first_piece)


def test_stop_strings_seeds_and_length(tiny):
    model, tokenizer = tiny
    scheduler = BatchScheduler(model, tokenizer, context_length=512)
    prompt = tokenizer("Once upon a time").input_ids
    free_text, reason = generate_blocking(scheduler, prompt, SamplingParams(max_tokens=12, temperature=0))
    assert reason == "length" and free_text
    stop = free_text[3:5]
    stopped, stop_reason = generate_blocking(
        scheduler, prompt, SamplingParams(max_tokens=12, temperature=0, stop=(stop,)))
    assert stop_reason == "stop"
    assert stopped == free_text[:free_text.find(stop)]
    sampled = [generate_blocking(scheduler, prompt, SamplingParams(max_tokens=12, temperature=1.0,
                                                                   top_p=0.9, seed=7))[0]
               for _ in range(2)]
    scheduler.close()
    assert sampled[0] == sampled[1]
