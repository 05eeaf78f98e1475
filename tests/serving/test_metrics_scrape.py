"""A real Prometheus server (Debian's package, on loopback) scrapes the server's /metrics."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.prometheus_server import prometheus_or_skip


def test_prometheus_scrapes_the_serving_metrics(start_server, tmp_path):
    running = start_server(max_batch_size=3)
    client = running.openai()
    for prompt in ("Hello", "The cat", "Once upon a time"):
        client.completions.create(model="tiny", prompt=prompt, max_tokens=5, temperature=0)
    address = urlparse(running.url).netloc
    with prometheus_or_skip(tmp_path / "prometheus", [address]) as prometheus:
        prometheus.wait_for('up{job="test"} == 1')
        generated = prometheus.wait_for('modeldeck_generation_tokens_total{version="tiny@1"}')
        assert float(generated[0]["value"][1]) == 15
        prompt_tokens = prometheus.query("modeldeck_prompt_tokens_total")
        assert float(prompt_tokens[0]["value"][1]) > 0
        ttft_count = prometheus.query('modeldeck_time_to_first_token_seconds_count')
        assert float(ttft_count[0]["value"][1]) == 3
        for name in ("modeldeck_inter_token_latency_seconds_bucket",
                     "modeldeck_e2e_request_latency_seconds_bucket", "modeldeck_batch_size_bucket",
                     "modeldeck_num_requests_running", "modeldeck_num_requests_waiting",
                     "modeldeck_max_num_seqs"):
            assert prometheus.query(name), name
        limit = prometheus.query("modeldeck_max_num_seqs")  # the batch limit, as served
        assert float(limit[0]["value"][1]) == 3
        info = prometheus.query("modeldeck_model_info")
        assert info[0]["metric"]["ref"] == "tiny@1" and info[0]["metric"]["dtype"] == "float32"
        assert info[0]["metric"]["engine_path"] == "fused", info[0]["metric"]
        outcomes = prometheus.query('modeldeck_requests_total{outcome="length"}')
        assert float(outcomes[0]["value"][1]) == 3
        memory = prometheus.query('modeldeck_memory_used_bytes{kind="rss"}')
        assert float(memory[0]["value"][1]) > 10_000_000
