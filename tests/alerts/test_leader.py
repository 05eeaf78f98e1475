"""One evaluator per deck: with a monitor and a console sampling at once, each alert is announced
once; when the evaluator stops, another takes over without announcing again what still fires."""

from __future__ import annotations

from pathlib import Path

from engine.alert_settings import AlertRule
from engine.paths import DeckPaths
from engine.telemetry.alerts import log
from engine.telemetry.alerts.service import AlertService
from tests.alerts.test_delivery import Clock, snapshot

RULE = (AlertRule(name="hot", when="gpu.temperature_c > 85", suppress_s=0),)


def test_one_evaluator_and_a_quiet_takeover(tmp_path: Path):
    paths, clock = DeckPaths(tmp_path / "deck"), Clock()
    first, second = AlertService(paths, RULE, clock=clock), AlertService(paths, RULE, clock=clock)
    try:
        assert [r["state"] for r in first.observe(snapshot(90, clock.now))] == ["fired"]
        assert second.observe(snapshot(90, clock.now)) == [] and not second.leading
        first.close()
        clock.now += 1
        assert second.observe(snapshot(90, clock.now)) == [] and second.leading  # still firing
        clock.now += 1
        assert [r["state"] for r in second.observe(snapshot(50, clock.now))] == ["resolved"]
    finally:
        first.close()
        second.close()
    assert [r["state"] for r in log.read_from(paths)[0]] == ["fired", "resolved"]
