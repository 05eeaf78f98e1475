"""The telemetry sampler's CPU use at a 1 s interval with 8 GPUs (target: under 1% of a core).

GPUs come from the replay source (tests/telemetry/fixtures/gpu-8x-h100.jsonl: this machine has
no GPU); the host is read for real through psutil; history keeps 600 points per series.

Measured two ways, in one run:
- background: the sampler's threads run for WINDOW_S seconds while the main thread sleeps; this
  process's CPU time over the window, against the same window with the sampler stopped
  (baseline, interleaved), as a percentage of one core;
- per tick: `sample_local()` in a tight loop, CPU ms per tick (= % of a core at 1 s / 10).
Also: the cost of `latest()`, what every repaint calls. Run: `.venv/bin/python bench/sampler.py`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
READINGS = REPO / "tests" / "telemetry" / "fixtures" / "gpu-8x-h100.jsonl"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WINDOW_S = float(os.environ.get("BENCH_WINDOW_S", "10"))


def build():
    from engine.telemetry.gpu import ReplaySource
    from engine.telemetry.host import HostSource
    from engine.telemetry.sampler import Sampler

    return Sampler(ReplaySource.from_file(READINGS), HostSource(), interval_s=1.0, history_points=600)


def cpu_over_window(run_sampler: bool) -> float:
    """Percent of one core this process used over WINDOW_S seconds of wall time."""
    sampler = build().start() if run_sampler else None
    wall, cpu = time.perf_counter(), time.process_time()
    time.sleep(WINDOW_S)
    used, elapsed = time.process_time() - cpu, time.perf_counter() - wall
    if sampler is not None:
        assert sampler.latest().sequence >= WINDOW_S - 1, "the sampler fell behind"
        sampler.close()
    return 100 * used / elapsed


def per_tick_ms(ticks: int = 300) -> float:
    with build() as sampler:
        for _ in range(600):  # fill the 600-point histories: steady state
            sampler.sample_local()
        cpu = time.process_time()
        for _ in range(ticks):
            sampler.sample_local()
        return 1000 * (time.process_time() - cpu) / ticks


def latest_us(calls: int = 100_000) -> float:
    with build() as sampler:
        sampler.sample_local()
        start = time.perf_counter()
        for _ in range(calls):
            sampler.latest()
        return 1e6 * (time.perf_counter() - start) / calls


def main() -> None:
    on, off, ticks = [], [], []
    for _ in range(ROUNDS):
        off.append(cpu_over_window(False))
        on.append(cpu_over_window(True))
        ticks.append(per_tick_ms())
    on_pct, off_pct = statistics.median(on), statistics.median(off)
    print(f"{'variant (1 s interval, 8 replayed GPUs)':<44}{'% of a core':>12}")
    print(f"{'process idle, sampler stopped (baseline)':<44}{off_pct:>12.3f}")
    print(f"{'sampler running (background threads)':<44}{on_pct:>12.3f}")
    print(f"sampler's own share: {on_pct - off_pct:.3f}% of a core; CPU per tick "
          f"{statistics.median(ticks):.2f} ms (= {statistics.median(ticks) / 10:.3f}% at 1 s); "
          f"latest() {latest_us():.2f} us")
    print(f"target < 1% of a core: {'met' if on_pct - off_pct < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
