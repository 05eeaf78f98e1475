"""A rule driven through fire, flap and resolve reaches a real webhook receiver and a real
command hook exactly once each way; a webhook that is down or slow never stalls a tick."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from engine.alert_settings import AlertRule
from engine.paths import DeckPaths
from engine.snapshots import GpuDevice, GpuSnapshot, TelemetrySnapshot
from engine.telemetry.alerts import log
from engine.telemetry.alerts.service import AlertService
from tests.alerts.receivers import Receiver, refused_port

HOOK = """import json, os, sys
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("MODELDECK_ALERT_")}) + "\\n")
"""
# fire after 2 s hot; a flap inside 5 s clear is the same alert; resolve after 5 s clear
TEMPERATURES = [90, 90, 90, 90, 50, 91, 50, 50, 92, 50, 50, 50, 50, 50, 50, 50]


def snapshot(temperature: float, at: float) -> TelemetrySnapshot:
    return TelemetrySnapshot(at, GpuSnapshot("ok", devices=(GpuDevice(0, temperature_c=temperature),)))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.close()


def test_fire_flap_resolve_arrive_once(tmp_path: Path, receiver: Receiver,
                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TEST_ALERT_TOKEN", "s3cret-token")
    hook, calls = tmp_path / "hook.py", tmp_path / "calls.jsonl"
    hook.write_text(HOOK)
    rule = AlertRule(name="hot", when="gpu.temperature_c > 85", for_s=2, suppress_s=5,
                     webhook=receiver.url, webhook_secret_env="TEST_ALERT_TOKEN",
                     command=(sys.executable, str(hook), str(calls)))
    paths, clock = DeckPaths(tmp_path / "deck"), Clock()
    service = AlertService(paths, (rule,), clock=clock)
    announced = []
    for temperature in TEMPERATURES:
        announced += service.observe(snapshot(temperature, clock.now))
        clock.now += 1.0
    service.close(wait_s=20)

    assert [(r["state"], r["rule"], r["subject"]) for r in announced] == [
        ("fired", "hot", "gpu:0"), ("resolved", "hot", "gpu:0")]
    assert announced[1]["flaps"] == 2
    posts = receiver.wait_for(2)
    assert [(body["state"], body["rule"], body["values"]) for body, _ in posts] == [
        ("fired", "hot", {"gpu.temperature_c": 90}), ("resolved", "hot", {"gpu.temperature_c": 50})]
    assert {auth for _, auth in posts} == {"Bearer s3cret-token"}
    hook_calls = [line for line in calls.read_text().splitlines()]
    assert len(hook_calls) == 2
    assert ['"MODELDECK_ALERT_STATE": "fired"' in hook_calls[0],
            '"MODELDECK_ALERT_STATE": "resolved"' in hook_calls[1]] == [True, True]
    logged, _ = log.read_from(paths)
    assert [record["state"] for record in logged] == ["fired", "resolved"]
    assert "s3cret-token" not in log.log_path(paths).read_text()


@pytest.mark.parametrize("kind", ["refused", "slow"])
def test_a_down_webhook_does_not_stall_sampling(tmp_path: Path, kind: str):
    slow = Receiver(delay_s=2.0) if kind == "slow" else None
    url = slow.url if slow else f"http://127.0.0.1:{refused_port()}/hook"
    rule = AlertRule(name="hot", when="gpu.temperature_c > 85", suppress_s=0, webhook=url,
                     webhook_timeout_s=0.3, webhook_retries=1)
    paths, clock = DeckPaths(tmp_path / "deck"), Clock()
    service = AlertService(paths, (rule,), clock=clock)
    slowest = 0.0
    try:
        for temperature in [90, 50, 90, 50, 90, 50]:  # three fires, three resolves
            started = time.perf_counter()
            service.observe(snapshot(temperature, clock.now))
            slowest = max(slowest, time.perf_counter() - started)
            clock.now += 1.0
        assert slowest < 0.2, f"a tick took {slowest:.3f} s with the webhook {kind}"
        undelivered = wait_for_undelivered(paths)
        assert undelivered["sink"] == "webhook" and undelivered["of"] == "fired"
        reason = undelivered["reason"]
        assert ("refused" if kind == "refused" else "timeout") in reason, reason
        assert "/hook" not in reason  # only scheme, host and port: a token may hide in a path
    finally:
        service.close(wait_s=0)
        if slow:
            slow.close()


def wait_for_undelivered(paths: DeckPaths, timeout_s: float = 10.0) -> dict:
    """The first `undelivered` record (2 tries of 0.3 s and a 0.5 s pause: about 1.1 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [r for r in log.read_from(paths)[0] if r["state"] == "undelivered"]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no undelivered record")


def test_the_webhook_secret_comes_from_a_file_and_an_unreadable_one_is_recorded(tmp_path: Path,
                                                                                receiver: Receiver):
    secret_file = tmp_path / "token"
    secret_file.write_text("from-a-file\n")
    paths, clock = DeckPaths(tmp_path / "deck"), Clock()
    rules = (AlertRule(name="hot", when="gpu.temperature_c > 85", webhook=receiver.url,
                       webhook_secret_file=secret_file),
             AlertRule(name="hot-too", when="gpu.temperature_c > 85", webhook=receiver.url,
                       webhook_secret_file=tmp_path / "absent"))
    service = AlertService(paths, rules, clock=clock)
    service.observe(snapshot(90, clock.now))
    service.close(wait_s=10)
    [(body, auth)] = receiver.wait_for(1)
    assert (body["rule"], auth) == ("hot", "Bearer from-a-file")
    [undelivered] = [r for r in log.read_from(paths)[0] if r["state"] == "undelivered"]
    assert undelivered["rule"] == "hot-too" and "cannot read API key file" in undelivered["reason"]
