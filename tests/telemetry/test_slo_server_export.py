"""The local server's SLO gauges on /metrics (engine.serving.slo_window), counted by hand: exact
shares per bound over the sliding window, the joint share, the error rate and goodput."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.serving.metrics import ServerMetrics
from engine.serving.slo_window import SloWindows
from engine.slo_settings import SloBounds, SloSettings
from tests.telemetry.served_requests import serve


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gauges(metrics: ServerMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            if family.name.startswith("modeldeck_slo_") for sample in family.samples}


def key(name: str, **labels: str) -> tuple[str, tuple]:
    return (f"modeldeck_slo_{name}", tuple(sorted(labels.items())))


def metrics_with(slo: SloSettings, clock: Clock) -> ServerMetrics:
    metrics = ServerMetrics(slo)
    metrics.registry.unregister(metrics.slo)
    metrics.slo = SloWindows(slo, clock)  # the same collector on a clock the test steps
    metrics.registry.register(metrics.slo)
    return metrics


def test_shares_error_rate_and_goodput_are_counted_exactly():
    clock = Clock()
    metrics = metrics_with(SloSettings(ttft_s=0.1, e2e_s=1.0, error_rate=0.1, window_s=30), clock)
    observer = metrics.observer("tiny@1")
    clock.now += 20  # 20 s since the start: rates are over 20 s, not the 30 s window
    serve(observer, 3, 0.05, 0.5)  # within both bounds
    serve(observer, 3, 0.1, 1.0)  # exactly on both bounds: within ("at or below")
    serve(observer, 2, 0.20, 0.5)  # first token too late
    serve(observer, 2, 0.05, 2.0)  # whole request too slow
    observer.finished("error", 0.1, 0)
    metrics.count_rejection("tiny@1", "rejected")

    found = gauges(metrics)
    ttft, e2e = 8 / 10, 8 / 10  # ttft: 8 of 10 first tokens; e2e: 8 of 10 successes
    error_rate = 2 / 12  # 12 finished, of which one error and one rejection
    joint = ttft * e2e * (1 - error_rate)
    assert found[key("attainment", version="tiny@1", slo="ttft")] == pytest.approx(ttft)
    assert found[key("attainment", version="tiny@1", slo="e2e")] == pytest.approx(e2e)
    assert found[key("attainment", version="tiny@1", slo="joint")] == pytest.approx(joint)
    assert key("attainment", version="tiny@1", slo="itl") not in found  # no bound
    assert found[key("bound_seconds", version="tiny@1", slo="ttft")] == 0.1
    assert found[key("error_rate", version="tiny@1")] == pytest.approx(error_rate)
    assert found[key("error_rate_bound", version="tiny@1")] == 0.1
    assert found[key("goodput_requests_per_second", version="tiny@1")] == pytest.approx(12 / 20 * joint)
    assert found[key("goodput_tokens_per_second", version="tiny@1")] == pytest.approx(10 / 20 * joint)
    assert found[key("window_seconds")] == 30


def test_observations_leave_the_window_and_models_use_their_own_bounds():
    clock = Clock()
    slo = SloSettings(ttft_s=0.1, window_s=10, models={"big": SloBounds(ttft_s=1.0)})
    metrics = metrics_with(slo, clock)
    serve(metrics.observer("tiny@1"), 4, 0.5, 0.6)  # missed against 0.1 s
    serve(metrics.observer("big@3"), 4, 0.5, 0.6)  # met against big's 1.0 s
    found = gauges(metrics)
    assert found[key("attainment", version="tiny@1", slo="ttft")] == 0.0
    assert found[key("attainment", version="big@3", slo="ttft")] == 1.0
    clock.now += 5
    serve(metrics.observer("tiny@1"), 4, 0.05, 0.06)
    assert gauges(metrics)[key("attainment", version="tiny@1", slo="ttft")] == pytest.approx(0.5)
    clock.now += 6  # the first four are older than the 10 s window now
    assert gauges(metrics)[key("attainment", version="tiny@1", slo="ttft")] == 1.0
    clock.now += 10  # nothing left: the version's gauges are absent, not zero
    assert not [key for key in gauges(metrics) if ("version", "tiny@1") in key[1]]


def test_without_slo_the_server_exports_no_slo_gauges():
    metrics = ServerMetrics()
    serve(metrics.observer("tiny@1"), 2, 0.05, 0.06)
    assert metrics.slo is None and not gauges(metrics)
    assert ServerMetrics(SloSettings()).slo is None
