"""A real Prometheus server for tests (Debian's `prometheus` package), on loopback.

Reusable by any test area:

    from tests.prometheus_server import prometheus_or_skip, start_exporter
    exporter_port = start_exporter(registry)          # prometheus_client on 127.0.0.1
    with prometheus_or_skip(tmp_path, [f"127.0.0.1:{exporter_port}"]) as server:
        server.wait_for('up{job="test"} == 1')
        ... PrometheusConnect(server.url) ...

The server gets a free port, a temporary config and TSDB directory, a 1 s scrape interval, and
is terminated when the block ends. The only reason to skip is a missing `prometheus` binary
(install it with `make system-deps`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SKIP_REASON = "the prometheus binary is not installed (Debian package `prometheus`; `make system-deps`)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_exporter(registry: Any) -> int:
    """Serve a prometheus_client registry on 127.0.0.1 (daemon thread); returns the port."""
    from prometheus_client import start_http_server

    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return port


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(address, timeout=5) as response:
            return json.load(response)["data"]["result"]

    def wait_for(self, promql: str, timeout_s: float = 60.0, minimum: int = 1) -> list[dict[str, Any]]:
        """Poll until the query returns at least `minimum` series (scrapes take a moment)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            result = self.query(promql)
            if len(result) >= minimum:
                return result
            time.sleep(0.25)
        raise TimeoutError(f"no result for {promql!r} within {timeout_s} s")


def _config(targets: Sequence[str], scrape_interval: str) -> str:
    quoted = ", ".join(f"'{target}'" for target in targets)
    return (f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
            f"scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{quoted}]\n")


@contextlib.contextmanager
def prometheus_or_skip(workdir: Path, targets: Sequence[str],
                       scrape_interval: str = "1s") -> Iterator[PrometheusServer]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(SKIP_REASON)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(_config(targets, scrape_interval))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(server: PrometheusServer, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {server.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"prometheus not ready within {timeout_s} s")
