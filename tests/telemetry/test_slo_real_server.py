"""A real local server (`modeldeck serve --detach`, its own process, on loopback) under a bounded
load reports, on its /metrics, the SLO attainment its clients measured themselves.

The bounds are set inside the distribution a first run measured, the TTFT bound at its 25th
percentile and the end-to-end bound at its 75th, so a server that counted wrongly (the wrong
bound, the wrong side of it, [slo]'s bound instead of the model's) disagrees by far more than
the 5 points allowed.

A client sees each latency later than the server does: the server's clock starts when the
handler gets the request and stops when the scheduler emits the token (or the last one); the
client's also covers sending the request and reading the streamed chunk. So the server's share
must lie between the clients' share at the bound and their share at the bound plus
PATH_ALLOWANCE_S, 5 points allowed either way. (A plain "within 5 points of the clients' share
at the bound" failed in CI: 64 requests crowd near a median, and on a busy 2-core box 5 of them
straddled the bound by a few ms of that path.) The server's latency clock starts when the HTTP
request comes in (engine.serving.app), not when its scheduler gets the request: before that was
so, the server's TTFT share read 9-22 points higher than the clients' here."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_modeldeck, stop_leftover_server
from tests.serving.client_threads import ClientThreads

pytestmark = pytest.mark.slow
# 64 requests of 16-127 tokens on 4 connections to a server that batches 2: half wait for a slot,
# so latencies spread over about a second, far more than the HTTP path adds to the clients' view.
# 64, not fewer: one request is 1.6 points, so the 5 points allowed are not one unlucky request.
CLIENTS, PER_CLIENT = 4, 16
# The most the way in and the way out (HTTP, the event loop, SSE, the client's thread) add to a
# latency the clients measure: a few ms quiet, tens when the 2 cores are shared with 4 client
# threads and the model's GEMMs.
PATH_ALLOWANCE_S = 0.02
TTFT_QUANTILE, E2E_QUANTILE = 0.25, 0.75


class Timed(ClientThreads):
    """Each client sends `count` streaming completions and records (ttft, e2e) as it saw them."""

    def __init__(self, url: str, count: int) -> None:
        super().__init__(self._loop, CLIENTS)
        self.url, self.count, self.lock = url, count, threading.Lock()
        self.measured: list[tuple[float, float]] = []

    def _loop(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for number in range(self.count):
                # 16..127 tokens, spread evenly: end-to-end times spread evenly too
                tokens = 16 + (index * self.count + number) * 37 % 112
                body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": tokens,
                        "temperature": 0, "stream": True, "ignore_eos": True}
                started, first = time.perf_counter(), None
                with client.stream("POST", "/v1/completions", json=body) as response:
                    assert response.status_code == 200
                    for line in response.iter_lines():
                        if first is None and _has_text(line):
                            first = time.perf_counter() - started
                ended = time.perf_counter() - started
                assert first is not None
                with self.lock:
                    self.measured.append((first, ended))


def _has_text(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    return any(choice.get("text") for choice in json.loads(line[6:]).get("choices", ()))


def load(deck_home: Path, toml: str, count: int) -> tuple[list[tuple[float, float]], str]:
    """Run `count` requests per client against a fresh detached server (its own process, as
    `modeldeck serve --detach` starts it); its /metrics afterwards."""
    (deck_home / "deck.toml").write_text(toml)
    started = run_modeldeck("serve", "--detach", "--json", "--port", "0", "--dtype", "float32",
                            "--max-batch-size", "2", home=deck_home)
    assert started.code == 0, started
    url = started.json["url"]
    try:
        with Timed(url, count) as clients:
            for worker in clients.threads:
                worker.join(120)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        if run_modeldeck("serve", "--stop", home=deck_home).code != 0:
            stop_leftover_server(deck_home)
    assert len(clients.measured) == CLIENTS * count
    return clients.measured, metrics


def gauge(metrics: str, slo: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "modeldeck_slo_attainment" and sample.labels["slo"] == slo:
                assert sample.labels["version"] == "tiny@1"
                return sample.value
    raise AssertionError(f"no modeldeck_slo_attainment for {slo}")


def bounds_from(measured: list[tuple[float, float]]) -> tuple[float, float]:
    """The TTFT bound at its TTFT_QUANTILE of `measured`, the e2e bound at its E2E_QUANTILE."""
    def quantile(values: list[float], share: float) -> float:
        return statistics.quantiles(values, n=100)[round(share * 100) - 1]

    return (quantile([first for first, _ in measured], TTFT_QUANTILE),
            quantile([ended for _, ended in measured], E2E_QUANTILE))


def share_within(values: list[float], bound: float) -> float:
    return sum(value <= bound for value in values) / len(values)


def test_server_attainment_agrees_with_what_the_clients_measured(deck, deck_home: Path,
                                                                 tiny_model_dir: Path):
    from engine import actions

    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    deck.registry.move_pointer("local", deck.registry.resolve("tiny@1"), action="deploy",
                               reason="test", arguments={"ref": "tiny@1"})  # its gate passed
    calibration, _ = load(deck_home, "", PER_CLIENT)  # no [slo] yet: the quantiles here, now
    for _attempt in range(3):  # a shared machine can be slower on the next run: recalibrate
        ttft_bound, e2e_bound = bounds_from(calibration)
        # [slo]'s own bounds would pass everything: the model's table must be the one applied
        toml = (f"[slo]\nttft_s = 100\ne2e_s = 100\nwindow_s = 600\n"
                f'[slo.models."tiny"]\nttft_s = {ttft_bound!r}\ne2e_s = {e2e_bound!r}\n')
        measured, metrics = load(deck_home, toml, PER_CLIENT)
        firsts, ends = [first for first, _ in measured], [ended for _, ended in measured]
        client_ttft, client_e2e = share_within(firsts, ttft_bound), share_within(ends, e2e_bound)
        if 0.1 < client_ttft < 0.6 and 0.4 < client_e2e < 0.9:
            break  # the bounds sit inside this run's distribution, on their sides of the median
        calibration = measured
    ttft_late = share_within(firsts, ttft_bound + PATH_ALLOWANCE_S)
    e2e_late = share_within(ends, e2e_bound + PATH_ALLOWANCE_S)
    server_ttft, server_e2e = gauge(metrics, "ttft"), gauge(metrics, "e2e")
    report = (f"bounds ttft {ttft_bound:.4f} e2e {e2e_bound:.4f}; client ttft {client_ttft:.3f} "
              f"(+{PATH_ALLOWANCE_S}s: {ttft_late:.3f}) e2e {client_e2e:.3f} "
              f"(+{PATH_ALLOWANCE_S}s: {e2e_late:.3f}); server ttft {server_ttft:.3f} "
              f"e2e {server_e2e:.3f}")
    assert 0.1 < client_ttft < 0.6 and 0.4 < client_e2e < 0.9, report  # inside the distribution
    assert client_e2e - 0.05 <= server_e2e <= e2e_late + 0.05, report
    assert client_ttft - 0.05 <= server_ttft <= ttft_late + 0.05, report
    assert server_ttft < 1.0, report  # [slo]'s 100 s bound was not the one applied
    print(report)
