"""Per-version windows from a modeldeck server's /metrics (every series has a `version` label):
the exposition is the server's own (engine.serving.metrics.ServerMetrics, prometheus_client),
so the parser reads what a real server writes."""

from __future__ import annotations

from prometheus_client import generate_latest

from engine.remote.derive import quantile, version_windows
from engine.remote.metrics import parse_scrape
from engine.serving.metrics import ServerMetrics
from tests.telemetry.served_requests import serve


def exposition(metrics: ServerMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_each_version_gets_its_own_rates_latency_and_failures_over_the_window():
    metrics = ServerMetrics()
    live = metrics.observer("tiny@1")
    serve(live, 4, 0.004, 0.01)
    before = parse_scrape(exposition(metrics), at=0.0)
    assert set(before.versions) == {"tiny@1"}  # the candidate has served nothing yet

    candidate = metrics.observer("tiny@2")
    serve(live, 6, 0.004, 0.01)
    serve(candidate, 3, 0.3, 0.4)
    metrics.count_rejection("tiny@2", "error")
    after = parse_scrape(exposition(metrics), at=2.0)

    windows = {part.version: part for part in version_windows(before, after)}
    assert set(windows) == {"tiny@1", "tiny@2"}
    assert (windows["tiny@1"].requests, windows["tiny@1"].failed) == (6, 0)
    assert (windows["tiny@2"].requests, windows["tiny@2"].failed) == (4, 1)  # counted from 0
    assert windows["tiny@1"].measured.tokens_per_s == 3.0
    assert windows["tiny@2"].measured.tokens_per_s == 1.5
    assert quantile(0.95, windows["tiny@1"].measured.latency_deltas["ttft"]) < 0.01
    assert quantile(0.95, windows["tiny@2"].measured.latency_deltas["ttft"]) > 0.25
    # The endpoint's totals are unchanged: summed over both versions.
    assert after.values["modeldeck_requests"] == 14
