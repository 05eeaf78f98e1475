"""The streaming clients and the figures shared by the serving benchmarks (bench/serve.py,
bench/serve_vs_vllm.py): the prompts, a free loopback port, the client threads, the server-sent
events of an OpenAI-compatible stream, and the percentile and ratio helpers of their tables.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from typing import Any, Callable, Iterator

PROMPTS = (
    "Write a short story about a lighthouse keeper.", "Explain how rain forms.",
    "Give me three tips for learning to cook.", "Describe the city of Paris.",
    "What is a prime number? Explain with examples.", "Write a poem about autumn leaves.",
    "How does a bicycle stay upright?", "Summarise the plot of a detective novel you invent.",
)

# One request: (http client, prompt) -> (generated tokens, seconds to the first token).
StreamOne = Callable[[Any, str], tuple[int, float]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_clients(stream_one: StreamOne, clients: int, requests: int,
                timeout: float) -> tuple[list[tuple[int, float]], list[Exception], float]:
    """`clients` threads, each sending `requests` streamed requests one after another.

    Returns each request's (tokens, TTFT), the errors (for the caller to report, never hidden)
    and the wall seconds of the whole round."""
    import httpx

    results: list[tuple[int, float]] = []
    failures: list[Exception] = []
    # Built before the clock starts, as a load generator keeps its sessions: each httpx.Client
    # costs ~20 ms of CPU (it loads the CA bundle even for plain http), and 8 built at a round's
    # start kept one of this box's 2 cores busy while the first requests were served, counted
    # as the server's time to first token.
    sessions = [httpx.Client(timeout=timeout) for _ in range(clients)]

    def client(index: int) -> None:
        with sessions[index] as http:
            for turn in range(requests):
                prompt = PROMPTS[(index * requests + turn) % len(PROMPTS)]
                try:
                    results.append(stream_one(http, prompt))
                except Exception as error:  # noqa: BLE001 - returned to the caller
                    failures.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, failures, time.perf_counter() - started


def round_result(results: list[tuple[int, float]], seconds: float) -> dict:
    """The row of one round: generated tokens, wall seconds, every request's TTFT."""
    return {"tokens": sum(t for t, _ in results), "seconds": seconds,
            "ttft": [ttft for _, ttft in results]}


def sse_chunks(response) -> Iterator[dict]:
    """The JSON chunks of a streamed OpenAI-compatible response, `[DONE]` left out."""
    for line in response.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        yield json.loads(line[6:])


def round_rates(rounds: list[dict]) -> list[float]:
    """Generated tokens per second, one per round."""
    return [r["tokens"] / r["seconds"] for r in rounds]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median_ratio(top: list[float], bottom: list[float]) -> float:
    """Round by round (same machine state), then the median."""
    return statistics.median(a / b for a, b in zip(top, bottom))
