"""Telemetry fixtures: the recorded /metrics bodies, a loopback replay server, GPU readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.telemetry.replay_server import ReplayServer

# Recorded /metrics bodies of real vLLM and llama.cpp servers, kept in the repository so a plain
# clone passes (copies of the captures in the project's shared/fixtures/metrics/).
METRICS_FIXTURES = REPO / "tests" / "fixtures" / "metrics"
GPU_READINGS = Path(__file__).parent / "fixtures" / "gpu-8x-h100.jsonl"


def recorded(name: str) -> str:
    path = METRICS_FIXTURES / name
    if not path.exists():
        pytest.fail(f"recorded /metrics fixture missing: {path}")
    return path.read_text()


@pytest.fixture
def replay_server():
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture
def gpu_readings() -> Path:
    return GPU_READINGS


class FleetExporter:
    """What the fleet's exporters would publish: DCGM gauges for two hosts and a vLLM counter
    that keeps growing (about 100 tokens/s) while the fixture lives."""

    GPUS = {  # (Hostname, gpu) -> (util %, FB used MiB, FB free MiB, temp C, power W)
        ("host-a", "0"): (91.0, 70000.0, 11000.0, 67.0, 612.5),
        ("host-a", "1"): (12.0, 3000.0, 78000.0, 41.0, 98.0),
        ("host-b", "0"): (55.0, 40000.0, 41000.0, 58.0, 350.25),
    }

    def __init__(self) -> None:
        import threading

        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        labels = ["gpu", "UUID", "modelName", "Hostname"]
        gauges = [Gauge(name, name, labels, registry=self.registry) for name in
                  ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                   "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE")]
        for (host, index), values in self.GPUS.items():
            for gauge, value in zip(gauges, values):
                gauge.labels(index, f"GPU-{host}-{index}", "NVIDIA H100 80GB HBM3", host).set(value)
        self.tokens = Counter("vllm:generation_tokens", "tokens", ["model_name"], registry=self.registry)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._generate, daemon=True)

    def _generate(self) -> None:
        while not self._stop.wait(0.1):
            self.tokens.labels("smollm2").inc(10)

    def start(self) -> int:
        from tests.prometheus_server import start_exporter

        port = start_exporter(self.registry)
        self._thread.start()
        return port

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture(scope="module")
def fleet_prometheus(tmp_path_factory):
    """A real Prometheus on loopback scraping a FleetExporter every second."""
    from engine.telemetry.prometheus import SERVING_TOKENS_QUERY
    from tests.prometheus_server import prometheus_or_skip

    exporter = FleetExporter()
    port = exporter.start()
    with prometheus_or_skip(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{port}"]) as server:
        server.wait_for("DCGM_FI_DEV_GPU_UTIL", minimum=3)
        server.wait_for(f"({SERVING_TOKENS_QUERY}) > 0")
        yield server, exporter
    exporter.stop()


@pytest.fixture
def tls_replay_server(tmp_path: Path):
    """The replay server over https with a self-signed certificate (made by the openssl CLI)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (needed to make a test certificate)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = ReplayServer(tls=context).start()
    yield server
    server.stop()
