"""Polling real HTTP endpoints on loopback: statuses, reasons, rates across polls, replicas,
API keys. The replay server plays back recorded /metrics bodies; faults are real (closed ports,
a handler that sleeps past the timeout, HTTP errors, TLS spoken to a plain-HTTP port)."""

from __future__ import annotations

import pytest

from engine.config import EndpointSettings
from engine.remote.poller import EndpointPoller
from tests.prometheus_server import free_port
from tests.telemetry.conftest import recorded
from tests.telemetry.replay_server import Script

IDLE, AFTER = recorded("vllm-0.32-cpu-idle.txt"), recorded("vllm-0.32-cpu-after-16req.txt")


def endpoint(name: str, url: str, kind: str = "vllm", **extra) -> EndpointSettings:
    return EndpointSettings(name=name, kind=kind, url=url, timeout_s=extra.pop("timeout_s", 2.0),
                            **extra)


def poll_twice(poller: EndpointPoller):
    first = poller.poll_blocking()
    return first, poller.poll_blocking()


def by_name(snapshots) -> dict:
    return {snapshot.name: snapshot for snapshot in snapshots}


def test_up_endpoint_gets_rates_and_percentiles_from_the_second_poll(replay_server):
    url = replay_server.add("v", Script(bodies=[IDLE, AFTER]))
    poller = EndpointPoller([endpoint("v", url)])
    try:
        assert poller.latest[0].status == "stale" and poller.latest[0].reason == "not polled yet"
        first, second = poll_twice(poller)
    finally:
        poller.close()
    assert first[0].status == "up" and first[0].tokens_per_s is None
    assert first[0].running == 0 and first[0].kv_cache_pct == 0
    snapshot = second[0]
    assert snapshot.status == "up" and snapshot.reason is None and snapshot.http_status == 200
    assert snapshot.tokens_per_s > 0 and snapshot.requests_per_s > 0
    assert 0.1 < snapshot.ttft_p50_s <= snapshot.ttft_p95_s <= snapshot.ttft_p99_s <= 0.25
    assert snapshot.e2e_p95_s > 0 and snapshot.itl_p95_s > 0
    assert snapshot.tokens_history == (round(snapshot.tokens_per_s, 3),)
    assert snapshot.checked_at >= first[0].checked_at and snapshot.last_up_at == snapshot.checked_at


def test_faults_are_statuses_with_reasons(replay_server):
    closed_port = free_port()  # nothing listens there: connection refused
    urls = {
        "ok": replay_server.add("ok", Script(bodies=[AFTER])),
        "http500": replay_server.add("http500", Script(bodies=[AFTER], health_status=500,
                                                       metrics_status=500)),
        "sick": replay_server.add("sick", Script(bodies=[AFTER], health_status=503)),
        "garbled": replay_server.add("garbled", Script(bodies=["vllm:num_requests_running{x 1\n"])),
        "html": replay_server.add("html", Script(bodies=["<html>not metrics</html>"])),
        "nometrics": replay_server.add("nometrics", Script(bodies=[AFTER], metrics_status=404)),
    }
    settings = [endpoint(name, url) for name, url in urls.items()]
    settings += [endpoint("refused", f"http://127.0.0.1:{closed_port}"),
                 endpoint("tls", urls["ok"].replace("http://", "https://")),
                 endpoint("openai", urls["nometrics"], kind="openai")]
    poller = EndpointPoller(settings)
    try:
        result = by_name(poller.poll_blocking())
    finally:
        poller.close()
    assert (result["ok"].status, result["ok"].reason) == ("up", None)
    assert (result["http500"].status, result["http500"].reason) == ("down", "http 500")
    assert result["http500"].http_status == 500
    assert (result["sick"].status, result["sick"].reason) == ("degraded", "health: http 503")
    assert result["sick"].running == 0  # its metrics still count
    assert result["garbled"].status == "degraded" and "malformed /metrics" in result["garbled"].reason
    assert (result["html"].status, result["html"].reason) == ("degraded", "no serving metrics in /metrics")
    assert (result["nometrics"].status, result["nometrics"].reason) == ("degraded", "/metrics: http 404")
    assert (result["refused"].status, result["refused"].reason) == ("down", "refused")
    assert (result["tls"].status, result["tls"].reason) == ("down", "tls")
    assert (result["openai"].status, result["openai"].reason) == ("up", None)  # /metrics optional


def test_a_slow_endpoint_never_stalls_the_others(replay_server):
    slow = Script(bodies=[AFTER], delay_s=3.0)
    settings = [endpoint("slow", replay_server.add("slow", slow), timeout_s=0.3)]
    settings += [endpoint(f"fast{n}", replay_server.add(f"fast{n}", Script(bodies=[AFTER])))
                 for n in range(5)]
    poller = EndpointPoller(settings)
    try:
        result = by_name(poller.poll_blocking())
        # the tick is over while the slow handler is still asleep: its timeout bounded the wait
        assert not slow.slow_finished.is_set()
    finally:
        poller.close()
    assert (result["slow"].status, result["slow"].reason) == ("down", "timeout")
    assert all(result[f"fast{n}"].status == "up" for n in range(5))


def test_replicas_of_one_model_merge_their_buckets(replay_server):
    busy = recorded("vllm-0.32-cpu-busy-7-running.txt")
    settings = [endpoint("a", replay_server.add("a", Script(bodies=[IDLE, AFTER])), model="smol"),
                endpoint("b", replay_server.add("b", Script(bodies=[AFTER, busy])), model="smol"),
                endpoint("gone", f"http://127.0.0.1:{free_port()}", model="smol")]
    poller = EndpointPoller(settings)
    try:
        _, second = poll_twice(poller)
        models = poller.models()
    finally:
        poller.close()
    assert len(models) == 1
    merged = models[0]
    assert (merged.model, merged.replicas, merged.replicas_up) == ("smol", 3, 2)
    a, b = by_name(second)["a"], by_name(second)["b"]
    assert merged.running == a.running + b.running == 7
    assert merged.tokens_per_s == pytest.approx(a.tokens_per_s + b.tokens_per_s)
    # the merged p95 lies between the replicas' p95s: it is a percentile of the union
    low, high = sorted((a.ttft_p95_s, b.ttft_p95_s))
    assert low <= merged.ttft_p95_s <= high


def test_api_key_is_sent_and_never_published(replay_server, monkeypatch, tmp_path):
    secret = "sk-telemetry-test-7c1d9e"
    monkeypatch.setenv("TEST_ENDPOINT_KEY", secret)
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    guarded = Script(bodies=[AFTER], required_key=secret)
    url = replay_server.add("guarded", guarded)
    settings = [endpoint("by-env", url, api_key_env="TEST_ENDPOINT_KEY"),
                endpoint("by-file", url, api_key_file=key_file),
                endpoint("no-key", url),
                endpoint("bad-file", url, api_key_file=tmp_path / "missing")]
    poller = EndpointPoller(settings)
    try:
        result = by_name(poller.poll_blocking())
    finally:
        poller.close()
    assert result["by-env"].status == "up" and result["by-file"].status == "up"
    assert (result["no-key"].status, result["no-key"].reason) == ("down", "http 401")
    assert (result["bad-file"].status, result["bad-file"].reason) == ("down", "api key file cannot be read")
    assert f"Bearer {secret}" in guarded.seen_authorization
    assert secret not in repr(tuple(result.values()))
    assert secret not in str([snapshot.to_dict() for snapshot in result.values()])


def test_tls_is_verified_by_default(tls_replay_server):
    url = tls_replay_server.add("secure", Script(bodies=[AFTER]))
    assert url.startswith("https://")
    poller = EndpointPoller([endpoint("verified", url), endpoint("trusting", url, verify_tls=False)])
    try:
        result = by_name(poller.poll_blocking())
    finally:
        poller.close()
    assert (result["verified"].status, result["verified"].reason) == ("down", "tls")  # self-signed
    assert (result["trusting"].status, result["trusting"].reason) == ("up", None)
