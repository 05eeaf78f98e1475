"""A real Ray head on loopback for the ray-serve target tests (`ray start --head --block` from the
`ray[serve]` package): CPU only, 2 CPUs, a bounded object store, every port picked free, and
only the processes it started ended at teardown (by pid; never `ray stop`, which ends every Ray
process on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

START_TIMEOUT_S = 120.0
OBJECT_STORE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class RayHead:
    dashboard: str  # http://127.0.0.1:PORT, Serve's REST API
    serve_url: str  # where Serve's HTTP proxy will answer once an application is applied


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ray_command(temp_dir: str, ports: list[int]) -> list[str]:
    gcs, dashboard, node_manager, object_manager, agent_http, agent_grpc, metrics, runtime_env, \
        client, workers = ports[:10]
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    return [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
            "--include-dashboard", "true", "--num-cpus", "2", "--num-gpus", "0",
            "--object-store-memory", str(OBJECT_STORE_BYTES), "--temp-dir", temp_dir,
            "--node-manager-port", str(node_manager), "--object-manager-port", str(object_manager),
            "--dashboard-agent-listen-port", str(agent_http),
            "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
            "--runtime-env-agent-port", str(runtime_env), "--ray-client-server-port", str(client),
            "--min-worker-port", str(workers), "--max-worker-port", str(workers + 40),
            "--disable-usage-stats"]


def _wait_for_dashboard(process: subprocess.Popen, url: str, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited {process.returncode}: {_tail(log)}")
        try:
            if httpx.get(f"{url}/api/serve/applications/", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"Ray's dashboard did not answer within {START_TIMEOUT_S:g}s: {_tail(log)}")


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(lines[-3:]) or "no output"


def _end(process: subprocess.Popen) -> None:
    """SIGTERM the head and every process under it (by pid), then SIGKILL what is left."""
    import psutil

    try:
        started = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        started = []
    for proc in started:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(started, timeout=5)  # Ray would drain for 30 s: no need
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pyproject's test extra)")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are long
    ports = free_ports(10)
    serve_port = free_ports(1)[0]
    log = Path(temp_dir) / "ray-start.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),  # replicas import this tree
        "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
        # Ray tries a failing replica constructor 3 times (each a new process importing torch)
        # before DEPLOY_FAILED; once is enough for a test and saves a minute.
        "RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT": "1"}
    with log.open("wb") as output:
        process = subprocess.Popen(_ray_command(temp_dir, ports), stdout=output,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    dashboard = f"http://127.0.0.1:{ports[1]}"
    try:
        _wait_for_dashboard(process, dashboard, log)
    except RuntimeError as error:
        _end(process)
        shutil.rmtree(temp_dir, ignore_errors=True)
        pytest.skip(f"a Ray head could not start here: {error}")
    try:
        yield RayHead(dashboard, f"http://127.0.0.1:{serve_port}")
    finally:
        _end(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


class Traffic:
    """A client on loopback sending requests to the application's route while a change runs:
    non-streamed completions and streamed chat in turn, a bounded number, every failure kept
    (a non-200, a transport error, a stream that does not end with [DONE])."""

    MAX_REQUESTS = 3000

    def __init__(self, base_url: str) -> None:
        import threading

        self.base_url = base_url
        self.answered: list[str] = []  # the version that answered each request, in order
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=60) as client:
            for number in range(self.MAX_REQUESTS):
                if self._stop.is_set():
                    return
                try:
                    self._one(client, stream=number % 2 == 1)
                except httpx.HTTPError as error:
                    self.failures.append(f"request {number}: {type(error).__name__}")

    def _one(self, client, stream: bool) -> None:
        if not stream:
            response = client.post(f"{self.base_url}/v1/completions", json={
                "model": "any", "prompt": "Hello", "max_tokens": 3})
            self._record(response.status_code, response.headers, response.text)
            return
        body = {"model": "any", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3, "stream": True}
        with client.stream("POST", f"{self.base_url}/v1/chat/completions", json=body) as response:
            text = "".join(response.iter_text())
        ended = text.rstrip().endswith("data: [DONE]")
        self._record(response.status_code if ended else -1, response.headers, text)

    def _record(self, status: int, headers, text: str) -> None:
        if status == 200:
            self.answered.append(headers.get("x-modeldeck-version", "?"))
        else:
            self.failures.append(f"HTTP {status}: {text[:200]}")

    def wait_for(self, version: str, timeout: float = 60.0) -> None:
        """Until a request answered after this call comes from `version` (bounded)."""
        start = len(self.answered)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread.is_alive():
            if version in self.answered[start:]:
                return
            time.sleep(0.1)
        raise AssertionError(f"no answer from {version} after the change: "
                             f"{self.answered[start:][-5:]}, failures {self.failures[-3:]}")
