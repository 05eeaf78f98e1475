"""The Throughput pane says its rates are over a window, shows the local server `starting`, and
draws zero as a visible baseline (a blank would read as 'no data')."""

from __future__ import annotations

from dataclasses import replace

import pytest

from console import present, replay
from console.app import ModeldeckApp
from console.data import EndpointRow, EndpointsPanel, history_columns, sparkline
from console.sources import FixedSource
from console.widgets.throughput_pane import ThroughputPane
from engine.deck import Deck
from tests.console.console_helpers import wait_until_loaded


def test_zero_is_a_baseline_and_any_traffic_stands_above_it():
    assert sparkline((0.0, 0.0, 100.0), 3) == "▁▁█"
    assert sparkline((0.0, 1.0, 100.0), 3)[1] not in (" ", "▁")
    assert sparkline((0.0, 0.0), 2) == "▁▁"


def test_history_has_one_column_per_window():
    history = tuple(float(second) for second in range(1, 601))  # 10 minutes at 1 s
    columns = history_columns(history, 10.0, 1.0)
    assert len(columns) == 60 and columns[-1] == 600.0 and columns[-2] == 590.0
    assert history_columns(history, None, None) == history  # unknown spacing: every point


@pytest.mark.anyio
async def test_title_names_the_window_and_a_loading_server_reads_starting(deck_home):
    starting = EndpointRow("local", "modeldeck", "starting", "loading the model (a start is under way)")
    panel = EndpointsPanel("ok", "", (starting,), window_s=10.0)
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replace(replay.snapshot(), endpoints=panel)),
                       refresh_s=600.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        pane = app.dashboard.query_one(ThroughputPane)
        assert pane.border_title == "Throughput, 10 s window"
        rendered = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
    assert "starting" in rendered, rendered


async def _rendered_throughput(deck_home, endpoint: EndpointRow, width: int) -> tuple:
    panel = EndpointsPanel("ok", "", (endpoint,), window_s=10.0)
    app = ModeldeckApp(Deck.at(deck_home), FixedSource(replace(replay.snapshot(), endpoints=panel)),
                       refresh_s=600.0)
    async with app.run_test(size=(width, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        table = app.dashboard.query_one(ThroughputPane).table
        return table.columns_shown, "\n".join(table.render_line(y).text for y in range(2))


@pytest.mark.anyio
async def test_slo_attainment_is_a_column_cut_first_when_narrow(deck_home):
    from engine.snapshots import SloStats

    assert present.slo_attainment(None) == "" and present.slo_attainment(SloStats()) == "-"
    assert present.slo_attainment(SloStats(joint=0.9999)) == "99%"  # 100% only when none missed
    endpoint = EndpointRow("remote-a", "vllm", "up", tokens_per_s=1234.5, ttft_p95_s=0.2,
                           requests_per_s=3.0, running=2, waiting=0, kv_cache_pct=40.0,
                           tokens_history=(1.0, 2.0), slo=SloStats(ttft=0.98, joint=0.973))
    columns, lines = await _rendered_throughput(deck_home, endpoint, 240)
    assert columns[-1] == "SLO" and "97%" in lines, lines
    columns, _ = await _rendered_throughput(deck_home, replace(endpoint, slo=None), 240)
    assert "SLO" not in columns and "KV" in columns  # no [slo]: no empty column
    columns, lines = await _rendered_throughput(deck_home, endpoint, 100)
    assert "tok/s" in columns and "SLO" not in columns and "97%" not in lines, lines
