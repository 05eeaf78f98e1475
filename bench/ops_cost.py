"""What the flight recorder and [[alerts]] evaluation add to the sampler, at 1 s ticks with 8 GPUs
and 50 endpoints (target: under 1% of a core together).

GPUs come from the replay source (tests/telemetry/fixtures/gpu-8x-h100.jsonl); 50 endpoints
are played back by a loopback replay server in its own process (the recorded vLLM and llama.cpp
/metrics bodies in tests/fixtures/metrics, cycling so counters move; 2 of them dead: nothing
listens); the host is read for real. The deck home is real (registry, jobs folder, run files):
each line reads the audit log, the jobs and the local server's state as `record` does.

Measured in one run:
- per line: the recorder's own CPU for one line (gather from the deck, encode, write), over
  the sampler's real snapshots, in a tight loop; at 1 s ticks, ms per line / 10 = % of a core;
  plus the rotation's gzip, spread over the lines it compresses;
- per tick: alert evaluation (the default rules, the deck's jobs and rollout read as the
  evaluating process reads them, the fire/flap/resolve machine, the log), over the same
  snapshots, in a tight loop;
- background, for context: this process's CPU over WINDOW_S seconds with the sampler's threads
  at 1 s ticks, without and with the console's recorder thread (RecorderThread) attached,
  interleaved. Those two differ by less than their noise on a shared machine.
Run: `.venv/bin/python bench/ops_cost.py` (about 30 s; BENCH_WINDOW_S, BENCH_ROUNDS).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
READINGS = REPO / "tests" / "telemetry" / "fixtures" / "gpu-8x-h100.jsonl"
METRICS = REPO / "tests" / "fixtures" / "metrics"
ENDPOINTS, DEAD = 50, 2
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
WINDOW_S = float(os.environ.get("BENCH_WINDOW_S", "5"))
LINES = 200


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_endpoints(workdir: Path) -> tuple[subprocess.Popen, list[dict]]:
    vllm = [str(METRICS / name) for name in ("vllm-0.32-cpu-idle.txt", "vllm-0.32-cpu-after-16req.txt",
                                             "vllm-0.32-cpu-busy-7-running.txt")]
    llama = [str(METRICS / name) for name in ("llamacpp-server-idle.txt",
                                              "llamacpp-server-after-8req.txt")]
    names = [f"ep{number:02d}" for number in range(ENDPOINTS)]
    kinds = {name: "llamacpp" if number % 5 == 1 else "vllm" for number, name in enumerate(names)}
    served = [{"name": name, "bodies": llama if kinds[name] == "llamacpp" else vllm}
              for name in names[DEAD:]]
    (workdir / "spec.json").write_text(json.dumps({"endpoints": served}))
    server = subprocess.Popen([sys.executable, "-m", "tests.telemetry.replay_server",
                               str(workdir / "spec.json")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    port, dead = int(server.stdout.readline()), closed_port()  # type: ignore[union-attr]
    endpoints = [{"name": name, "kind": kinds[name], "timeout_s": 0.5,
                  "url": f"http://127.0.0.1:{dead if number < DEAD else port}/{name}"}
                 for number, name in enumerate(names)]
    return server, endpoints


def open_deck(workdir: Path, endpoints: list[dict]):
    from engine.deck import Deck

    home = workdir / "deck"
    home.mkdir()
    blocks = ["[telemetry]\ninterval_s = 1.0\n"] + [
        "[[endpoints]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in entry.items())
        for entry in endpoints]
    (home / "deck.toml").write_text("\n".join(blocks))
    os.environ["MODELDECK_HOME"] = str(home)
    deck = Deck.at(home)
    deck.registry.append_audit("bench", {"note": "a row to read"}, "ok")
    return deck


def build_sampler(deck):
    from engine.telemetry import build_sampler as build
    from engine.telemetry.gpu import ReplaySource

    return build(deck, ReplaySource.from_file(READINGS), 1.0)


def warm_snapshots(deck, ticks: int = 12) -> list:
    """Real snapshots (8 GPUs, 50 endpoints with windowed rates), their histories filled to
    the sampler's 600 points: the steady state after ten minutes."""
    from dataclasses import replace

    with build_sampler(deck) as sampler:
        snapshots = [sampler.tick() for _ in range(ticks)]
    full = tuple(float(point % 97) for point in range(600))
    return [replace(snapshot, gpus=replace(snapshot.gpus, devices=tuple(
                        replace(device, utilization_history=full) for device in snapshot.gpus.devices)),
                    host=replace(snapshot.host, cpu_history=full),
                    endpoints=tuple(replace(endpoint, tokens_history=full)
                                    for endpoint in snapshot.endpoints))
            for snapshot in snapshots]


def per_line_ms(deck, snapshots: list, path: Path) -> tuple[float, float]:
    """(CPU ms per line, bytes per line) for the recorder alone."""
    from engine.actions.telemetry import FrameCollector
    from engine.telemetry.recorder import RecordingWriter

    collector = FrameCollector(deck)
    with RecordingWriter(path, None) as writer:
        writer.write(collector.frame(snapshots[0], True, 10.0))  # the keyframe, not counted
        cpu, start_size = time.process_time(), writer.size
        for number in range(LINES):
            writer.write(collector.frame(snapshots[number % len(snapshots)], False, 10.0))
        used = time.process_time() - cpu
        return 1000 * used / LINES, (writer.size - start_size) / LINES


def alerts_ms_per_tick(deck, snapshots: list) -> float:
    """CPU ms per tick of [[alerts]] evaluation (the shipped default rules) over real snapshots."""
    from engine.telemetry.alerts.service import AlertService

    service = AlertService(deck.paths, deck.config.alerts, exclusive=False)
    service.observe(snapshots[0])  # the first tick builds the subjects' readers: not counted
    cpu = time.process_time()
    for number in range(LINES):
        service.observe(snapshots[number % len(snapshots)])
    used = time.process_time() - cpu
    service.close(wait_s=1.0)
    return 1000 * used / LINES


def gzip_ms_per_line(path: Path, line_bytes: float) -> float:
    """The rotation's gzip (level 6), per line of what it compresses."""
    data = path.read_bytes()
    cpu = time.process_time()
    with gzip.GzipFile(fileobj=io.BytesIO(), mode="wb", compresslevel=6) as target:
        target.write(data)
    return 1000 * (time.process_time() - cpu) / (len(data) / line_bytes)


def background_pct(deck, path: Path | None) -> float:
    """% of a core this process used over WINDOW_S with the sampler (and the recorder) running."""
    from engine.actions.telemetry import RecorderThread

    sampler = build_sampler(deck).start()
    recorder = RecorderThread(deck, path, sampler.latest, 1.0).start() if path else None
    time.sleep(1.5)  # the first polls open connections: not the steady state
    wall, cpu = time.perf_counter(), time.process_time()
    time.sleep(WINDOW_S)
    used, elapsed = time.process_time() - cpu, time.perf_counter() - wall
    if recorder is not None:
        recorder.stop()
        assert recorder.frames >= WINDOW_S - 1 and recorder.problem is None, recorder.problem
    sampler.close()
    return 100 * used / elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        server, endpoints = start_endpoints(workdir)
        try:
            deck = open_deck(workdir, endpoints)
            snapshots = warm_snapshots(deck)
            latest = snapshots[-1]
            up = sum(endpoint.status == "up" for endpoint in latest.endpoints)
            line_ms, line_bytes = per_line_ms(deck, snapshots, workdir / "lines.jsonl")
            zip_ms = gzip_ms_per_line(workdir / "lines.jsonl", line_bytes)
            alerts_ms = alerts_ms_per_tick(deck, snapshots)
            without, with_recorder = [], []
            for number in range(ROUNDS):
                without.append(background_pct(deck, None))
                with_recorder.append(background_pct(deck, workdir / f"bg{number}.jsonl"))
            deck.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    report(len(latest.gpus.devices), len(latest.endpoints), up, line_ms, line_bytes, zip_ms,
           alerts_ms, statistics.median(without), statistics.median(with_recorder))


def report(gpus: int, endpoints: int, up: int, line_ms: float, line_bytes: float, zip_ms: float,
           alerts_ms: float, without: float, with_recorder: float) -> None:
    added = (line_ms + zip_ms) / 10  # ms per 1 s tick -> % of one core
    print(f"{gpus} replayed GPUs, {endpoints} endpoints ({up} up), 1 s ticks")
    print(f"{'measure':<52}{'value':>14}")
    print(f"{'recorder CPU per line (gather + encode + write)':<52}{line_ms:>11.2f} ms")
    print(f"{'rotation gzip, spread per line':<52}{zip_ms:>11.2f} ms")
    print(f"{'line size':<52}{line_bytes / 1000:>11.1f} kB")
    print(f"{'sampler alone, background (median % of a core)':<52}{without:>12.2f} %")
    print(f"{'sampler + recorder thread, background':<52}{with_recorder:>12.2f} %")
    print(f"recorder's added CPU at 1 s ticks: {added:.3f}% of a core "
          f"(ratio to the sampler's own: {added / without:.3f}); background difference "
          f"{with_recorder - without:+.2f}% (noise on a shared machine)")
    print(f"{'alert evaluation per tick (default rules)':<52}{alerts_ms:>11.2f} ms")
    both = added + alerts_ms / 10
    print(f"recorder + alerts at 1 s ticks: {both:.3f}% of a core "
          f"(ratio to the sampler's own: {both / without:.3f})")
    print(f"target < 1% of a core: {'met' if both < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
