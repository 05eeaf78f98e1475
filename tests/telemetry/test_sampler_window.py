"""Rates that do not flicker, and the local server as an endpoint of build_sampler (the console
and `modeldeck watch --json` read the same list).

A replayed vLLM finishes a batch every third poll (300 tokens, 3 requests, 3 first tokens in
the 50-100 ms bucket): per poll that reads 300 tok/s then 0 then 0; over the sampler's 10 s
window it reads about 100 tok/s on every tick. The sampler's clock is stepped by hand (one
second per tick), so the test needs no sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.config import EndpointSettings
from engine.remote.poller import EndpointPoller
from engine.telemetry.sampler import Sampler
from tests.conftest import REPO
from tests.telemetry.replay_server import Script

BURST_EVERY = 3


def vllm_body(tokens: int, requests: int, fast: int) -> str:
    """A /metrics body with the counters and the TTFT histogram the console reads."""
    return "\n".join([
        "# TYPE vllm:generation_tokens counter",
        f'vllm:generation_tokens_total{{model_name="m"}} {tokens}',
        "# TYPE vllm:request_success counter",
        f'vllm:request_success_total{{model_name="m",finished_reason="stop"}} {requests}',
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{model_name="m"} 1',
        "# TYPE vllm:time_to_first_token_seconds histogram",
        f'vllm:time_to_first_token_seconds_bucket{{le="0.05",model_name="m"}} 0',
        f'vllm:time_to_first_token_seconds_bucket{{le="0.1",model_name="m"}} {fast}',
        f'vllm:time_to_first_token_seconds_bucket{{le="+Inf",model_name="m"}} {fast}',
        f'vllm:time_to_first_token_seconds_count{{model_name="m"}} {fast}',
        f'vllm:time_to_first_token_seconds_sum{{model_name="m"}} {fast * 0.075}',
        ""])


def bursty_bodies(polls: int, idle_after: int) -> list[str]:
    bodies, batches = [], 0
    for poll in range(polls):
        if poll and poll % BURST_EVERY == 0 and poll <= idle_after:
            batches += 1
        bodies.append(vllm_body(300 * batches, 3 * batches, 3 * batches))
    return bodies


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_steady_load_reads_as_a_steady_rate_over_the_window(replay_server):
    url = replay_server.add("v", Script(bodies=bursty_bodies(40, idle_after=27)))
    poller = EndpointPoller([EndpointSettings(name="v", kind="vllm", url=url)])
    clock = SteppedClock()
    windowed, per_poll, ttft = [], [], []
    with Sampler(None, None, poller, interval_s=1.0, stale_after_s=1e9, clock=clock) as sampler:
        for _ in range(40):
            endpoint = sampler.tick().endpoints[0]
            assert endpoint.status == "up", endpoint
            windowed.append(endpoint.tokens_per_s)
            ttft.append(endpoint.ttft_p95_s)
            per_poll.append(poller.latest[0].tokens_per_s)  # what the poller alone would show
            clock.now += 1.0
        history = sampler.history("endpoint.v.tokens_per_s")
    loaded = windowed[12:27]  # the window is full and the load still runs
    assert min(loaded) >= 85 and max(loaded) <= 125, loaded  # 3 or 4 batches per 10 s
    assert all(value is not None and 0.05 <= value <= 0.1 for value in ttft[12:27]), ttft
    # the per-poll rate the pane used to show flickers between a burst and nothing
    assert 0 in [round(value) for value in per_poll[12:27] if value is not None]
    assert windowed[-1] == 0.0 and history[-1] == 0.0  # idle for over 10 s: zero, not unknown
    assert sampler.latest(now=0).endpoints[0].tokens_history[-1] == 0.0


def test_a_server_that_goes_down_starts_its_window_again(replay_server):
    script = Script(bodies=[vllm_body(0, 0, 0), vllm_body(1000, 10, 10)])
    url = replay_server.add("v", script)
    poller = EndpointPoller([EndpointSettings(name="v", kind="vllm", url=url)])
    clock = SteppedClock()
    with Sampler(None, None, poller, stale_after_s=1e9, clock=clock) as sampler:
        assert sampler.tick().endpoints[0].tokens_per_s is None  # one scrape: no rate yet
        clock.now += 2.0
        assert sampler.tick().endpoints[0].tokens_per_s == 500.0
        del replay_server.scripts["v"]  # gone: refused with 404 on every path
        assert sampler.tick().endpoints[0].status == "down"
        replay_server.scripts["v"] = script
        clock.now += 2.0
        back = sampler.tick().endpoints[0]
        script.bodies.append(vllm_body(1400, 14, 14))
        clock.now += 4.0
        later = sampler.tick().endpoints[0]
    assert back.status == "up" and back.tokens_per_s == 0.0  # the poll's own: nothing moved
    assert later.tokens_per_s == 100.0  # the window starts after the outage: 400 in 4 s


def write_local_server(home: Path, url: str) -> None:
    """run/server.json as a started server writes it, for a process that is alive (this one)
    and an address that answers (the replay server)."""
    from engine.paths import DeckPaths
    from engine.runstate import ServerInfo, write_server_info

    write_server_info(DeckPaths(home).ensure(), ServerInfo(os.getpid(), "127.0.0.1", 1, url, 0.0))


def test_watch_json_lists_the_local_server_while_it_runs(replay_server, deck_home: Path):
    url = replay_server.add("served", Script(bodies=[vllm_body(0, 0, 0)]))
    write_local_server(deck_home, url)

    def watched() -> list[str]:
        completed = subprocess.run(
            [sys.executable, "-m", "console.cli", "watch", "--json", "--count", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "MODELDECK_HOME": str(deck_home)})
        assert completed.returncode == 0, completed.stderr
        line = json.loads(completed.stdout.splitlines()[-1])
        return [(endpoint["name"], endpoint["status"]) for endpoint in line["endpoints"]]

    assert watched() == [("local", "up")]
    (deck_home / "run" / "server.json").unlink()
    assert watched() == []
