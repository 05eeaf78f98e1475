"""[slo] attainment and goodput from histogram bucket deltas (engine.remote.derive), on
hand-made histograms, and the [slo] section's refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from engine.config import load_config
from engine.errors import BadInput
from engine.remote.derive import Window, attainment, slo_stats
from engine.remote.metrics import Histogram
from engine.slo_settings import SloBounds
from tests.telemetry.served_requests import serve

INF = float("inf")
# 10 requests: 2 at or below 0.1 s, 5 more by 0.5 s, 2 more by 1 s, 1 beyond the last bucket
TEN = Histogram(((0.1, 2.0), (0.5, 7.0), (1.0, 9.0), (INF, 10.0)))


def measured(**deltas: Histogram) -> Window:
    return Window(10.0, 50.0, 20.0, 2.0, 0.0, 0.0, None, deltas)


def test_bound_on_a_bucket_edge_counts_the_whole_bucket():
    assert attainment(0.5, TEN) == pytest.approx(0.7)
    assert attainment(0.1, TEN) == pytest.approx(0.2)


def test_bound_inside_a_bucket_is_interpolated():
    # 0.3 s is halfway through (0.1, 0.5]: 2 + 5 / 2 = 4.5 of 10
    assert attainment(0.3, TEN) == pytest.approx(0.45)
    assert attainment(0.05, TEN) == pytest.approx(0.1)  # first bucket starts at 0


def test_bound_beyond_the_last_finite_bucket_counts_the_inf_bucket_as_missed():
    assert attainment(5.0, TEN) == pytest.approx(0.9)


def test_empty_window_has_no_attainment():
    assert attainment(0.5, None) is None
    assert attainment(0.5, Histogram(())) is None
    assert attainment(0.5, Histogram(((0.1, 0.0), (INF, 0.0)))) is None
    stats = slo_stats(measured(), SloBounds(ttft_s=0.5), None, None)
    assert stats.ttft is None and stats.joint is None and stats.goodput_tokens_per_s is None


def test_goodput_is_the_rates_times_the_product_of_attainments():
    stats = slo_stats(measured(ttft=TEN, e2e=TEN), SloBounds(ttft_s=0.5, e2e_s=1.0, error_rate=0.05),
                      20.0, 2.0)
    assert (stats.ttft, stats.e2e, stats.itl) == (pytest.approx(0.7), pytest.approx(0.9), None)
    assert stats.error_rate == pytest.approx(0.1) and stats.error_rate_met is False
    assert stats.joint == pytest.approx(0.7 * 0.9 * 0.9)  # and the 10% that failed
    assert stats.goodput_requests_per_s == pytest.approx(2.0 * 0.7 * 0.9 * 0.9)
    assert stats.goodput_tokens_per_s == pytest.approx(50.0 * 0.7 * 0.9 * 0.9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.integers(0, 50),
       st.floats(0.001, 20.0))
def test_attainment_is_a_share_that_grows_with_the_bound(increments, beyond, bound):
    edges = [0.1 * 2 ** index for index in range(len(increments))]
    counts = [float(sum(increments[:index + 1])) for index in range(len(increments))]
    histogram = Histogram(tuple(zip(edges, counts)) + ((INF, counts[-1] + beyond),))
    share = attainment(bound, histogram)
    if histogram.total == 0:
        assert share is None
        return
    assert 0.0 <= share <= 1.0
    assert attainment(bound * 1.5, histogram) >= share - 1e-12
    edge = edges[len(edges) // 2]  # on an edge: exactly the cumulative count there
    assert math.isclose(attainment(edge, histogram), counts[len(edges) // 2] / histogram.total)


@pytest.mark.parametrize("line, fragment", [
    ("ttft_s = -1", "slo.ttft_s"), ("itl_s = 0", "slo.itl_s"), ('e2e_s = "fast"', "slo.e2e_s"),
    ("error_rate = 1.5", "slo.error_rate"), ("error_rate = -0.1", "slo.error_rate"),
    ("ttft = 1", "slo.ttft"), ("e2e_s = inf", "slo.e2e_s")])
def test_bad_slo_values_are_refused_with_one_line(tmp_path: Path, line: str, fragment: str):
    path = tmp_path / "deck.toml"
    path.write_text(f"[slo]\n{line}\n")
    with pytest.raises(BadInput) as refused:
        load_config(path)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


def test_good_slo_values_load(tmp_path: Path):
    path = tmp_path / "deck.toml"
    path.write_text("[slo]\nttft_s = 0.5\ne2e_s = 4\nerror_rate = 0.01\n")
    slo = load_config(path).slo
    assert slo.latency_bounds == {"ttft": 0.5, "e2e": 4.0} and slo.configured


def test_each_version_and_the_endpoint_get_attainment_from_a_modeldeck_server():
    """The exposition is the server's own (ServerMetrics): the live version answers its first
    token in 4 ms, the candidate in 300 ms, and one candidate request fails."""
    from prometheus_client import generate_latest

    from engine.slo_settings import SloSettings
    from engine.remote.metrics import parse_scrape
    from engine.serving.metrics import ServerMetrics
    from engine.snapshots import EndpointSnapshot
    from engine.telemetry.sampler import _with_window

    metrics = ServerMetrics()
    live, candidate = metrics.observer("tiny@1"), metrics.observer("tiny@2")
    before = parse_scrape(generate_latest(metrics.registry).decode(), at=0.0)
    serve(live, 6, 0.004, 0.01)
    serve(candidate, 3, 0.3, 0.4)
    metrics.count_rejection("tiny@2", "error")
    after = parse_scrape(generate_latest(metrics.registry).decode(), at=2.0)
    endpoint = EndpointSnapshot("local", "modeldeck", "http://127.0.0.1:1", "up")
    slo = SloSettings(ttft_s=0.1, error_rate=0.05)

    measured = _with_window(endpoint, (0.0, before), (2.0, after), slo)
    versions = {part.version: part.slo for part in measured.versions}
    assert versions["tiny@1"].ttft == 1.0 and versions["tiny@1"].error_rate_met is True
    assert versions["tiny@2"].ttft == 0.0 and versions["tiny@2"].error_rate_met is False
    assert measured.slo.ttft == pytest.approx(6 / 9) and measured.slo.error_rate == pytest.approx(0.1)
    assert _with_window(endpoint, (0.0, before), (2.0, after), None).slo is None
