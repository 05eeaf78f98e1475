"""An idle scheduler waits a moment for requests still being read, so a burst that arrives
together starts in one forward (engine/serving/arrivals.py); a lone request never waits, and a
request that is never submitted holds nobody up for long. It also waits a moment for the
clients of a wave that just finished, as many as finished and no longer than a bound."""

from __future__ import annotations

import queue
import threading
import time

from engine.serving.arrivals import (GATHER_SECONDS, RETURN_GATHER_SECONDS, RETURN_SECONDS,
                                     Arrivals)
from engine.serving.scheduler import BatchScheduler, SamplingParams

PARAMS = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)


def _scheduler(tiny) -> tuple[BatchScheduler, list[int]]:
    model, tokenizer = tiny
    scheduler = BatchScheduler(model, tokenizer, max_batch_size=4, context_length=64)
    prefill_waves: list[int] = []  # how many prompts finished their prefill in each forward
    scheduler.logits_hook = lambda kind, sequences, logits: (
        prefill_waves.append(len(sequences)) if kind == "prefill" else None)
    return scheduler, prefill_waves


def _finish(events: queue.Queue) -> None:
    while events.get(timeout=30).finish_reason is None:
        pass


def test_requests_being_read_when_the_first_is_submitted_start_in_its_forward(tiny):
    scheduler, prefill_waves = _scheduler(tiny)
    tokenizer = tiny[1]
    first, second = queue.Queue(), queue.Queue()
    with scheduler.arrivals.arriving() as arrival_a, scheduler.arrivals.arriving() as arrival_b:
        scheduler.submit(tokenizer("The cat").input_ids, PARAMS, first.put, arrival=arrival_a)
        time.sleep(GATHER_SECONDS / 4)  # the second is still being tokenized
        scheduler.submit(tokenizer("Once upon a time").input_ids, PARAMS, second.put,
                         arrival=arrival_b)
    _finish(first)
    _finish(second)
    assert prefill_waves[0] == 2  # one forward prefilled both
    assert scheduler.arrivals.count == 0
    assert scheduler.close(timeout=30)


def test_a_lone_request_does_not_wait_and_a_stuck_one_holds_up_the_rest_only_briefly(tiny):
    scheduler, prefill_waves = _scheduler(tiny)
    tokenizer = tiny[1]
    events: queue.Queue = queue.Queue()
    with scheduler.arrivals.arriving() as arrival:
        scheduler.submit(tokenizer("Hello").input_ids, PARAMS, events.put, arrival=arrival)
        assert scheduler.arrivals.count == 0  # counted out as it was queued
    _finish(events)
    stuck = threading.Event()

    def read_forever() -> None:  # a request whose reading never ends (a client stalled mid-body)
        with scheduler.arrivals.arriving():
            stuck.wait(8)

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        while scheduler.arrivals.count == 0:
            time.sleep(0.001)
        started = time.monotonic()
        _finish(events_for(scheduler, tokenizer))
        assert time.monotonic() - started < 2.0  # bounded by GATHER_SECONDS, not the 8 s read
    finally:
        stuck.set()
        reader.join()
    assert scheduler.arrivals.count == 0
    assert scheduler.close(timeout=30)


def events_for(scheduler: BatchScheduler, tokenizer) -> queue.Queue:
    events: queue.Queue = queue.Queue()
    scheduler.submit(tokenizer("The sea").input_ids, PARAMS, events.put)
    return events


def test_every_request_the_server_reads_is_counted_out_whether_it_is_served_or_refused(tmp_path,
                                                                                       tiny_model_dir):
    """Through the real app (in process): served requests and refused ones (bad JSON, a bad
    field, an unknown model, a prompt too long) all leave the count at zero, or an idle
    scheduler would wait GATHER_SECONDS before every request from then on."""
    import asyncio
    import gc

    import httpx

    from engine.config import ServeSettings
    from engine.paths import DeckPaths
    from engine.serving.app import build_app
    from engine.serving.host import ModelHost
    from engine.serving.metrics import ServerMetrics

    host = ModelHost(DeckPaths(tmp_path / "home").ensure(), ServeSettings(), ServerMetrics())
    try:
        host.start_with(host.load_files("tiny@1", tiny_model_dir))
        app = build_app(host, "token", None, lambda: None)

        async def send_all() -> list[int]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                bodies = [b'{"prompt": "Hello", "max_tokens": 2}', b"{not json",
                          b'{"prompt": "Hello", "max_tokens": -1}',
                          b'{"prompt": "' + b"word " * 5000 + b'", "max_tokens": 2}',
                          b'{"prompt": "Hello", "max_tokens": 2, "stream": true}']
                responses = await asyncio.gather(*[
                    client.post("/v1/completions", content=body,
                                headers={"content-type": "application/json"})
                    for body in bodies])
                return [response.status_code for response in responses]

        statuses = asyncio.run(send_all())
        assert statuses[0] == 200 and statuses[-1] == 200 and set(statuses[1:4]) == {400}
        assert host.arrivals.count == 0
    finally:
        host.close()
        gc.unfreeze()


def _wave(scheduler: BatchScheduler, tokenizer, clients: list[str]) -> list[queue.Queue]:
    """One request per client, all prefilled in one forward (so they end in one step)."""
    events = [queue.Queue() for _ in clients]
    arrivals = [scheduler.arrivals.arriving(client) for client in clients]
    counted = [arrival.__enter__() for arrival in arrivals]
    for queue_, arrival in zip(events, counted):
        scheduler.submit(tokenizer("Once upon a time").input_ids, PARAMS, queue_.put,
                         arrival=arrival)
    for arrival in arrivals:
        arrival.__exit__(None, None, None)
    return events


def test_the_clients_of_a_wave_that_finished_together_start_their_next_requests_together(tiny):
    """Three streams end in one step; their clients come back 0, 4 and 8 ms after (as looping
    clients do, one after another): one forward prefills all three. Without the wait for
    returning clients the first came back to an idle scheduler and was prefilled alone."""
    scheduler, prefill_waves = _scheduler(tiny)
    tokenizer = tiny[1]
    clients = ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]
    firsts = _wave(scheduler, tokenizer, clients)
    seconds: list[queue.Queue] = [queue.Queue() for _ in clients]

    def client(index: int) -> None:
        _finish(firsts[index])
        time.sleep(0.004 * index)
        with scheduler.arrivals.arriving(clients[index]) as arrival:
            scheduler.submit(tokenizer("The sea").input_ids, PARAMS, seconds[index].put,
                             arrival=arrival)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for events in seconds:
        _finish(events)
    assert prefill_waves == [3, 3]
    assert scheduler.close(timeout=30)


def test_a_new_client_after_a_wave_ended_does_not_wait_for_that_wave():
    arrivals = Arrivals()
    arrivals.finished(["127.0.0.1:5001", "127.0.0.1:5002"])
    with arrivals.arriving("127.0.0.1:6000"):
        pass  # someone else: no sign that the wave's clients are coming back now
    assert not arrivals.pending()
    with arrivals.arriving(None):
        pass  # a request whose connection is unknown says nothing either
    assert not arrivals.pending()


def test_a_looping_lone_client_never_waits_and_clients_that_do_not_return_hold_up_briefly():
    arrivals = Arrivals()
    arrivals.finished(["a:1"])
    with arrivals.arriving("a:1"):
        pass  # its client is back: nobody else is expected
    assert not arrivals.pending()
    started = time.monotonic()
    arrivals.gather()
    assert time.monotonic() - started < RETURN_GATHER_SECONDS / 2
    arrivals.finished(["a:1", "b:2", "c:3"])
    with arrivals.arriving("b:2"):
        pass  # one of three is back
    assert arrivals.pending()
    started = time.monotonic()
    arrivals.gather()
    waited = time.monotonic() - started
    assert RETURN_GATHER_SECONDS * 0.9 <= waited < 1.0  # bounded, not for the two missing
    arrivals.finished(["a:1", "b:2"])
    time.sleep(RETURN_SECONDS * 1.2)
    with arrivals.arriving("a:1"):
        pass  # back, but too late to count as coming back with the others
    assert not arrivals.pending()
