"""One request's failure inside the scheduler ends that request alone: the batch beside it
keeps decoding. Driven directly (no HTTP), with faults the HTTP layer now refuses earlier."""

from __future__ import annotations

from types import SimpleNamespace

import queue

import pytest

from engine.serving.scheduler import BatchScheduler, SamplingParams, TokenEvent


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def prompt_tokens(self, count: int) -> None: ...
    def token(self, first: bool, seconds_since_previous: float) -> None: ...
    def step(self, batch_size: int, running: int, waiting: int) -> None: ...

    def finished(self, outcome: str, seconds: float, completion_tokens: int) -> None:
        self.outcomes.append(outcome)


def end_of(events: queue.Queue, timeout: float = 60) -> tuple[str, TokenEvent]:
    pieces = []
    while (event := events.get(timeout=timeout)).finish_reason is None:
        pieces.append(event.text)
    return "".join(pieces), event


def started(events: queue.Queue) -> None:
    """Wait until the sequence has produced text (it is in the running batch)."""
    first = events.get(timeout=60)
    assert first.finish_reason is None
    events.put(first)


@pytest.mark.parametrize("bad", [
    SamplingParams(max_tokens=8, temperature=1.0, seed=18446744073709551616),  # setup: seed
    SamplingParams(max_tokens=8, temperature=1.0, seed=-2**63 - 1),
    SamplingParams(max_tokens=8, temperature=1.0, top_p=-1.0),  # sampling: no probability mass
], ids=["seed-2**64", "seed-below-int64", "empty-distribution"])
def test_a_failing_sequence_ends_alone_while_another_streams(tiny, bad):
    model, tokenizer = tiny
    recorder = Recorder()
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=512,
                               observer=recorder)
    try:
        good_events: queue.Queue = queue.Queue()
        bad_events: queue.Queue = queue.Queue()
        ids = tokenizer("The cat").input_ids
        scheduler.submit(ids, SamplingParams(max_tokens=40, temperature=0, ignore_eos=True),
                         good_events.put)
        started(good_events)
        scheduler.submit(ids, bad, bad_events.put)
        _, bad_end = end_of(bad_events)
        assert bad_end.finish_reason == "error" and bad_end.text
        assert "\n" not in bad_end.text
        _, good_end = end_of(good_events)
        assert good_end.finish_reason == "length" and good_end.completion_tokens == 40
        assert sorted(recorder.outcomes) == ["error", "length"]
        # The scheduler still serves afterwards and stops promptly.
        again: queue.Queue = queue.Queue()
        scheduler.submit(ids, SamplingParams(max_tokens=3, temperature=0.7, seed=5), again.put)
        assert end_of(again)[1].finish_reason in ("length", "stop")
    finally:
        assert scheduler.close(timeout=10)


def test_a_token_id_outside_the_vocabulary_fails_alone(tiny):
    model, tokenizer = tiny
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=512)
    try:
        good: queue.Queue = queue.Queue()
        bad: queue.Queue = queue.Queue()
        scheduler.submit(tokenizer("Hello").input_ids,
                         SamplingParams(max_tokens=20, temperature=0, ignore_eos=True), good.put)
        started(good)
        scheduler.submit([1, 10**6], SamplingParams(max_tokens=4), bad.put)
        assert end_of(bad)[1].finish_reason == "error"
        assert end_of(good)[1].finish_reason == "length"
    finally:
        assert scheduler.close(timeout=10)


def test_a_batch_failure_ends_the_sequences_being_admitted_too(tiny):
    """Reproduced: a failure during prefill left the admitted sequences in neither the queue nor
    the batch, so their clients waited forever and the server could not shut down."""
    model, tokenizer = tiny
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=512)
    original = scheduler.step

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    try:
        scheduler.step = SimpleNamespace(run=broken, path="broken", reason="test")
        events: queue.Queue = queue.Queue()
        scheduler.submit(tokenizer("Hello").input_ids, SamplingParams(max_tokens=4), events.put)
        end = end_of(events, timeout=20)[1]
        assert end.finish_reason == "error" and "device lost" in end.text
        scheduler.step = original
        events = queue.Queue()
        scheduler.submit(tokenizer("Hello").input_ids, SamplingParams(max_tokens=2), events.put)
        assert end_of(events)[1].finish_reason in ("length", "stop")
    finally:
        scheduler.step = original
        assert scheduler.close(timeout=10)
