"""The parser, rates and percentiles on /metrics bodies recorded from real vLLM and llama.cpp
servers (see tests/fixtures/metrics/README.md for the work done between scrapes)."""

from __future__ import annotations

import re

import pytest

from engine.remote.derive import (Histogram, histogram_increase, merge_histograms, percentiles,
                                  quantile, window)
from engine.remote.metrics import MalformedMetrics, parse_scrape
from tests.telemetry.conftest import recorded

VLLM_IDLE, VLLM_AFTER = "vllm-0.32-cpu-idle.txt", "vllm-0.32-cpu-after-16req.txt"
VLLM_BUSY = "vllm-0.32-cpu-busy-7-running.txt"
LLAMA_IDLE, LLAMA_AFTER = "llamacpp-server-idle.txt", "llamacpp-server-after-8req.txt"


def raw_sum(body: str, name: str) -> float:
    """Sum of one series over its label sets, read with a regex (independent of the parser)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(body))


def raw_buckets(body: str, name: str) -> dict[float, float]:
    pattern = re.compile(rf'^{re.escape(name)}_bucket{{[^}}]*le="([^"]+)"[^}}]*}} (\S+)$', re.MULTILINE)
    return {float(le): float(value) for le, value in pattern.findall(body)}


def test_vllm_rates_match_the_recorded_work():
    idle, after = recorded(VLLM_IDLE), recorded(VLLM_AFTER)
    measured = window(parse_scrape(idle, at=100.0), parse_scrape(after, at=104.36))
    generated = raw_sum(after, "vllm:generation_tokens_total") - raw_sum(idle, "vllm:generation_tokens_total")
    requests = (raw_sum(after, "vllm:request_success_total")
                - raw_sum(idle, "vllm:request_success_total"))
    assert requests == 16  # the README: 16 completions between the scrapes
    assert measured.tokens_per_s == pytest.approx(generated / 4.36)
    assert measured.requests_per_s == pytest.approx(16 / 4.36)
    # the client measured 74 generated tok/s over the same 4.36 s
    assert measured.tokens_per_s == pytest.approx(74, abs=1.5)
    prompt = raw_sum(after, "vllm:prompt_tokens_total") - raw_sum(idle, "vllm:prompt_tokens_total")
    assert measured.prompt_tokens_per_s == pytest.approx(prompt / 4.36)


def test_vllm_percentiles_come_from_bucket_deltas():
    idle, after = recorded(VLLM_IDLE), recorded(VLLM_AFTER)
    measured = window(parse_scrape(idle, at=0.0), parse_scrape(after, at=1.0))
    ttft = measured.latency_deltas["ttft"]
    before = raw_buckets(idle, "vllm:time_to_first_token_seconds")
    now = raw_buckets(after, "vllm:time_to_first_token_seconds")
    assert dict(ttft.buckets) == {le: now[le] - before.get(le, 0.0) for le in now}
    assert ttft.total == 16
    p50, p95, p99 = percentiles(ttft)
    # 2 of 16 first tokens came within 0.1 s and all 16 within 0.25 s: every percentile from
    # p50 up lies in (0.1, 0.25], interpolated linearly as Prometheus' histogram_quantile does
    assert 0.1 < p50 < p95 < p99 <= 0.25
    assert p50 == pytest.approx(0.1 + 0.15 * (8 - 2) / (16 - 2))
    for logical in ("itl", "e2e"):
        values = percentiles(measured.latency_deltas[logical])
        assert all(value is not None and value > 0 for value in values)
        assert values[0] <= values[1] <= values[2]


def test_gauges_from_the_busy_scrape():
    busy = parse_scrape(recorded(VLLM_BUSY), at=0.0)
    measured = window(None, busy)
    assert measured.running == 7 and measured.waiting == 0
    assert measured.kv_cache_fraction == pytest.approx(
        raw_sum(recorded(VLLM_BUSY), "vllm:kv_cache_usage_perc"))
    assert measured.tokens_per_s is None  # one scrape: no rate yet


def test_llamacpp_counters_without_histograms():
    idle, after = recorded(LLAMA_IDLE), recorded(LLAMA_AFTER)
    measured = window(parse_scrape(idle, at=0.0), parse_scrape(after, at=10.0))
    predicted = (raw_sum(after, "llamacpp:tokens_predicted_total")
                 - raw_sum(idle, "llamacpp:tokens_predicted_total"))
    assert predicted > 0
    assert measured.tokens_per_s == pytest.approx(predicted / 10)
    assert measured.running == raw_sum(after, "llamacpp:requests_processing")
    assert measured.requests_per_s is None and measured.latency_deltas == {}


def test_old_vllm_names_and_underscore_spelling_are_matched():
    renamed = {"vllm:kv_cache_usage_perc": "vllm:gpu_cache_usage_perc",
               "vllm:inter_token_latency_seconds": "vllm:time_per_output_token_seconds"}
    idle, busy = recorded(VLLM_IDLE), recorded(VLLM_AFTER)
    for new, old in renamed.items():
        idle, busy = idle.replace(new, old), busy.replace(new, old)
    old_style = window(parse_scrape(idle, at=0.0), parse_scrape(busy, at=1.0))
    underscored = window(parse_scrape(recorded(VLLM_IDLE).replace("vllm:", "vllm_"), at=0.0),
                         parse_scrape(recorded(VLLM_AFTER).replace("vllm:", "vllm_"), at=1.0))
    current = window(parse_scrape(recorded(VLLM_IDLE), at=0.0),
                     parse_scrape(recorded(VLLM_AFTER), at=1.0))
    for measured in (old_style, underscored):
        assert measured.tokens_per_s == current.tokens_per_s
        assert measured.kv_cache_fraction == current.kv_cache_fraction
        assert percentiles(measured.latency_deltas["itl"]) == percentiles(current.latency_deltas["itl"])


def tgi_body(generated: float, durations: list[float], queue: int, batch: int) -> str:
    """A TGI-named /metrics body, produced by prometheus_client's own exporter."""
    from prometheus_client import CollectorRegistry, Gauge, Histogram as PromHistogram
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry()
    tokens = PromHistogram("tgi_request_generated_tokens", "tokens", registry=registry,
                           buckets=(1, 10, 100, 1000))
    duration = PromHistogram("tgi_request_duration", "seconds", registry=registry,
                             buckets=(0.1, 0.5, 1, 5))
    Gauge("tgi_queue_size", "queue", registry=registry).set(queue)
    Gauge("tgi_batch_current_size", "batch", registry=registry).set(batch)
    tokens.observe(generated)
    for seconds in durations:
        duration.observe(seconds)
    return generate_latest(registry).decode()


def test_tgi_names_from_its_documentation():
    before = parse_scrape(tgi_body(0, [], 0, 0), at=0.0)
    after = parse_scrape(tgi_body(500, [0.2, 0.3, 0.4, 2.0], 3, 5), at=2.0)
    measured = window(before, after)
    assert measured.tokens_per_s == pytest.approx(250)  # rate of tgi_request_generated_tokens_sum
    assert measured.waiting == 3 and measured.running == 5
    assert measured.latency_deltas["e2e"].total == 4
    assert 0.1 < quantile(0.5, measured.latency_deltas["e2e"]) <= 0.5
    assert "ttft" not in measured.latency_deltas  # TGI has no time-to-first-token metric


def test_counter_reset_counts_from_zero():
    # the busy scrape has more work than the after-16 one; read in that order, the server
    # looks restarted in between and its counters went down
    busy, restarted = recorded(VLLM_BUSY), recorded(VLLM_AFTER)
    assert raw_sum(restarted, "vllm:generation_tokens_total") < raw_sum(busy, "vllm:generation_tokens_total")
    measured = window(parse_scrape(busy, at=0.0), parse_scrape(restarted, at=10.0))
    # as Prometheus does: after a reset the new value is the increase (never a negative rate)
    assert measured.tokens_per_s == pytest.approx(
        raw_sum(restarted, "vllm:generation_tokens_total") / 10.0)
    assert measured.requests_per_s == pytest.approx(16 / 10.0)
    ttft = measured.latency_deltas["ttft"]
    assert dict(ttft.buckets) == raw_buckets(restarted, "vllm:time_to_first_token_seconds")


def test_replicas_merge_by_summing_buckets_not_averaging_percentiles():
    fast = Histogram(((0.1, 98.0), (1.0, 100.0), (float("inf"), 100.0)))
    slow = Histogram(((0.1, 0.0), (1.0, 10.0), (float("inf"), 10.0)))
    merged = merge_histograms([fast, slow])
    assert merged.buckets == ((0.1, 98.0), (1.0, 110.0), (float("inf"), 110.0))
    # 110 requests; the 95th percentile rank is 104.5: inside (0.1, 1.0]
    assert quantile(0.95, merged) == pytest.approx(0.1 + 0.9 * (104.5 - 98) / 12)
    averaged = (quantile(0.95, fast) + quantile(0.95, slow)) / 2
    assert quantile(0.95, merged) != pytest.approx(averaged)


def test_quantile_edges():
    assert quantile(0.5, Histogram(())) is None
    assert quantile(0.5, Histogram(((1.0, 0.0), (float("inf"), 0.0)))) is None
    beyond = Histogram(((1.0, 1.0), (float("inf"), 10.0)))
    assert quantile(0.99, beyond) == 1.0  # above the last finite bucket: its bound
    increase = histogram_increase(Histogram(((1.0, 5.0), (float("inf"), 5.0)), 2.0, 5.0),
                                  Histogram(((1.0, 7.0), (float("inf"), 9.0)), 9.0, 9.0))
    assert increase.buckets == ((1.0, 2.0), (float("inf"), 4.0)) and increase.count == 4.0


@pytest.mark.parametrize("body", [
    'vllm:num_requests_running{engine="0" 1\n',
    "vllm:num_requests_running one\n",
    'vllm:time_to_first_token_seconds_bucket{le="0.1"} nope\n',
])
def test_malformed_bodies_raise_a_clear_error(body):
    with pytest.raises(MalformedMetrics, match="malformed /metrics"):
        parse_scrape(body, at=0.0)


def test_unrelated_text_has_no_known_series():
    assert not parse_scrape("<html><body>hello</body></html>\n", at=0.0).known
    assert parse_scrape(recorded(LLAMA_IDLE), at=0.0).known


def test_modeldeck_servers_own_exporter_is_read_like_vllm():
    from engine.serving.metrics import ServerMetrics

    metrics = ServerMetrics()
    observer = metrics.observer("smol@3")
    before = parse_scrape(metrics.exposition().decode(), at=0.0)
    for _ in range(4):
        observer.prompt_tokens(10)
        observer.token(True, 0.12)
        for _ in range(9):
            observer.token(False, 0.03)
        observer.finished("stop", 0.4, 10)
    observer.step(batch_size=2, running=2, waiting=1)
    measured = window(before, parse_scrape(metrics.exposition().decode(), at=2.0))
    assert measured.tokens_per_s == pytest.approx(40 / 2) and measured.prompt_tokens_per_s == 20
    assert measured.requests_per_s == pytest.approx(4 / 2)
    assert (measured.running, measured.waiting) == (2, 1)
    assert 0.1 < quantile(0.5, measured.latency_deltas["ttft"]) <= 0.15
    assert 0.025 < quantile(0.5, measured.latency_deltas["itl"]) <= 0.05
    assert measured.latency_deltas["e2e"].total == 4
