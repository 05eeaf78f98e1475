"""Rollouts on the embedded server (engine.serving.rollout): the weighted split, sticky
sessions, shadow copies, gates and their reversal, with a real server on loopback."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from engine.serving.rollout import read_state

FAST = {"hold_s": 0, "min_requests": 1}


def token(home) -> str:
    return (home / "run" / "control.token").read_text().strip()


def post(server, home, route: str, body: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/control/rollout/{route}", json=body or {}, timeout=120,
                      headers={"X-Modeldeck-Token": token(home)})


def ask(client: httpx.Client, session: str | None = None, max_tokens: int = 1) -> httpx.Response:
    headers = {"X-Session-Id": session} if session else {}
    response = client.post("/v1/completions", headers=headers, json={
        "model": "tiny", "prompt": "Once upon a time", "max_tokens": max_tokens,
        "temperature": 0})
    assert response.status_code == 200, response.text
    return response


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_a_quarter_weight_splits_traffic_within_five_points_and_sessions_stick(
        running, deck_home):
    host = running.server.host
    assert host.add_candidate("tiny", 2).passed
    host.set_weight(0.25)
    with httpx.Client(base_url=running.url, timeout=60) as client:
        answered = [ask(client).headers["x-modeldeck-version"] for _ in range(240)]
        share = answered.count("tiny@2") / len(answered)
        assert abs(share - 0.25) <= 0.05, share
        sticky = {session: {ask(client, session).headers["x-modeldeck-version"]
                            for _ in range(4)} for session in ("alice", "bob", "carol", "dave")}
        metrics = client.get("/metrics").text
    assert all(len(sides) == 1 for sides in sticky.values()), sticky
    assert set(answered) == {"tiny@1", "tiny@2"}
    for series in ("modeldeck_time_to_first_token_seconds_count", "modeldeck_requests_total",
                   "modeldeck_generation_tokens_total", "modeldeck_traffic_weight"):
        for version in ("tiny@1", "tiny@2"):
            assert any(line.startswith(series) and f'version="{version}"' in line
                       for line in metrics.splitlines()), (series, version)
    assert 'modeldeck_traffic_weight{version="tiny@2"} 0.25' in metrics
