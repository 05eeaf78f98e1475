"""One endpoint-polling tick over 200 loopback endpoints (target: wall under 1 s per tick).

A replay server in its own process plays back the /metrics bodies recorded from real vLLM and
llama.cpp servers (shared/fixtures/metrics, cycling so counters move). Of the 200 endpoints, 10
are down (nothing listens: refused) and 10 are slow (answer after 3 s; the timeout is 0.5 s).

Variants, interleaved in each round:
- modeldeck: EndpointPoller (concurrent httpx.AsyncClient, bounded timeouts, filtered parse);
- baseline: the straightforward loop, one endpoint after another with httpx.Client, each body
  parsed whole with prometheus-client's parser.
Prints wall and CPU seconds per tick (CPU of this process: the server runs in another), and the
ratio. Run: `.venv/bin/python bench/poll.py` (BENCH_ROUNDS=3 by default).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FIXTURES = REPO.parent / "shared" / "fixtures" / "metrics"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TICKS_PER_ROUND = 5
ENDPOINTS, TIMEOUT_S, SLOW_S = 200, 0.5, 3.0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def plan() -> tuple[list[dict], list[dict]]:
    """(server spec, endpoint settings): 10% down or slow, a fifth of the rest llama.cpp."""
    vllm = [str(FIXTURES / name) for name in ("vllm-0.32-cpu-idle.txt", "vllm-0.32-cpu-after-16req.txt",
                                              "vllm-0.32-cpu-busy-7-running.txt")]
    llama = [str(FIXTURES / name) for name in ("llamacpp-server-idle.txt", "llamacpp-server-after-8req.txt")]
    served, endpoints, dead_port = [], [], closed_port()
    for number in range(ENDPOINTS):
        name = f"ep{number:03d}"
        if number % 20 == 0:
            endpoints.append({"name": name, "kind": "vllm", "url": f"http://127.0.0.1:{dead_port}/{name}"})
            continue
        kind = "llamacpp" if number % 5 == 1 else "vllm"
        served.append({"name": name, "bodies": llama if kind == "llamacpp" else vllm,
                       "delay_s": SLOW_S if number % 20 == 10 else 0.0})
        endpoints.append({"name": name, "kind": kind, "url": f"PORT/{name}"})
    return served, endpoints


def start_server(spec: list[dict], workdir: Path) -> tuple[subprocess.Popen, int]:
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps({"endpoints": spec}))
    process = subprocess.Popen([sys.executable, "-m", "tests.telemetry.replay_server", str(spec_path)],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    return process, int(process.stdout.readline())


def modeldeck_tick(poller) -> tuple[float, float, Counter]:
    wall, cpu = time.perf_counter(), time.process_time()
    snapshots = poller.poll_blocking()
    return (time.perf_counter() - wall, time.process_time() - cpu,
            Counter(f"{s.status}:{s.reason}" if s.reason else s.status for s in snapshots))


def baseline_tick(client, settings) -> tuple[float, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    wall, cpu = time.perf_counter(), time.process_time()
    for endpoint in settings:
        try:
            client.get(endpoint.url + "/health", timeout=TIMEOUT_S)
            body = client.get(endpoint.url + "/metrics", timeout=TIMEOUT_S).text
            list(text_string_to_metric_families(body))
        except httpx.HTTPError:
            pass
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    import httpx

    from engine.config import EndpointSettings
    from engine.remote.poller import EndpointPoller

    spec, endpoint_plan = plan()
    with tempfile.TemporaryDirectory() as workdir:
        server, port = start_server(spec, Path(workdir))
        try:
            settings = [EndpointSettings(name=e["name"], kind=e["kind"], timeout_s=TIMEOUT_S,
                                         url=e["url"].replace("PORT", f"http://127.0.0.1:{port}"))
                        for e in endpoint_plan]
            poller = EndpointPoller(settings)
            client = httpx.Client(limits=httpx.Limits(max_connections=ENDPOINTS))
            first = modeldeck_tick(poller)  # connections opened, each series parsed once
            ours, base, statuses = [], [], Counter()
            for _ in range(ROUNDS):
                for _ in range(TICKS_PER_ROUND):
                    wall, cpu, statuses = modeldeck_tick(poller)
                    ours.append((wall, cpu))
                base.append(baseline_tick(client, settings))
            poller.close()
            client.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    report(first, ours, base, statuses)


def report(first, ours, base, statuses) -> None:
    median = lambda samples, index: statistics.median(sample[index] for sample in samples)  # noqa: E731
    print(f"{ENDPOINTS} endpoints, timeout {TIMEOUT_S} s; last tick: {dict(sorted(statuses.items()))}")
    print(f"{'variant':<44}{'wall s/tick':>12}{'CPU s/tick':>12}")
    print(f"{'modeldeck poller, first tick (cold)':<44}{first[0]:>12.3f}{first[1]:>12.3f}")
    print(f"{'modeldeck poller (median of %d)' % len(ours):<44}{median(ours, 0):>12.3f}{median(ours, 1):>12.3f}")
    print(f"{'baseline: sequential, full parse (median)':<44}{median(base, 0):>12.3f}{median(base, 1):>12.3f}")
    print(f"ratio baseline/modeldeck: wall {median(base, 0) / median(ours, 0):.1f}x, "
          f"CPU {median(base, 1) / median(ours, 1):.1f}x; target wall < 1 s per tick: "
          f"{'met' if median(ours, 0) < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
