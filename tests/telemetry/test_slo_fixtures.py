"""Attainment and goodput from two real vLLM /metrics scrapes (tests/fixtures/metrics: 16
completions between them), through the parser, the window and the [slo] resolution, against a
computation done by hand from the bucket counts printed below."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.remote.metrics import parse_scrape
from engine.slo_settings import SloBounds, SloSettings
from engine.snapshots import EndpointSnapshot
from engine.telemetry.sampler import _with_window

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "metrics"
SECONDS = 4.0  # between the two scrapes, as the test places them

# The deltas, read off vllm-0.32-cpu-after-16req.txt (the idle scrape is all zeros):
#   ttft  cumulative: le=0.1 -> 2, le=0.25 -> 16, +Inf 16
#   itl   cumulative: le=0.05 -> 277, le=0.075 -> 306, le=0.1 -> 307, +Inf 307
#   e2e   cumulative: le=1.0 -> 7, le=1.5 -> 16, +Inf 16
#   generation_tokens 323, request_success (stop 8 + length 8) 16
TTFT = (2 + 14 * (0.175 - 0.1) / (0.25 - 0.1)) / 16  # 0.175 s is halfway through (0.1, 0.25]
ITL = 277 / 307  # 0.05 s is a bucket edge: that bucket's count exactly
E2E = (7 + 9 * (1.25 - 1.0) / (1.5 - 1.0)) / 16  # 1.25 s is halfway through (1.0, 1.5]
JOINT = TTFT * ITL * E2E  # vLLM does not count failures per request here: no error factor


def scrapes():
    before = parse_scrape((FIXTURES / "vllm-0.32-cpu-idle.txt").read_text(), at=0.0)
    after = parse_scrape((FIXTURES / "vllm-0.32-cpu-after-16req.txt").read_text(), at=SECONDS)
    return (0.0, before), (SECONDS, after)


def test_hand_computed_attainment_and_goodput_match():
    assert (TTFT, E2E) == (pytest.approx(0.5625), pytest.approx(0.71875))  # 9/16, 11.5/16
    endpoint = EndpointSnapshot("v", "vllm", "http://127.0.0.1:1", "up", model="smollm2")
    # the bounds come from the model's table and the endpoint's override, key by key
    slo = SloSettings(ttft_s=9.0, itl_s=0.05, models={"smollm2": SloBounds(ttft_s=0.175)})
    measured = _with_window(endpoint, *scrapes(), slo, SloBounds(e2e_s=1.25))
    stats = measured.slo
    assert stats.ttft == pytest.approx(TTFT) and stats.itl == pytest.approx(ITL)
    assert stats.e2e == pytest.approx(E2E) and stats.joint == pytest.approx(JOINT)
    assert (stats.ttft_bound_s, stats.itl_bound_s, stats.e2e_bound_s) == (0.175, 0.05, 1.25)
    assert stats.error_rate is None and stats.error_rate_met is None
    assert measured.tokens_per_s == pytest.approx(323 / SECONDS)
    assert measured.requests_per_s == pytest.approx(16 / SECONDS)
    assert stats.goodput_tokens_per_s == pytest.approx(323 / SECONDS * JOINT)
    assert stats.goodput_requests_per_s == pytest.approx(16 / SECONDS * JOINT)


def test_bounds_past_every_request_and_before_any():
    endpoint = EndpointSnapshot("v", "vllm", "http://127.0.0.1:1", "up", model="smollm2")
    everything = _with_window(endpoint, *scrapes(), SloSettings(ttft_s=0.25, e2e_s=1.5))
    assert everything.slo.joint == 1.0
    assert everything.slo.goodput_tokens_per_s == pytest.approx(323 / SECONDS)
    # 0.05 s is inside the empty (0.04, 0.06] bucket: no first token came that fast
    nothing = _with_window(endpoint, *scrapes(), SloSettings(ttft_s=0.05))
    assert nothing.slo.ttft == 0.0 and nothing.slo.goodput_requests_per_s == 0.0
