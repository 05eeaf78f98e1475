"""Console benchmark: the dashboard headless against 8 replayed GPUs, 50 endpoints and a job
with 100,000 loss points, compared with the same app over an empty deck (the baseline), the two
interleaved in fresh processes; a third variant ("overlay") also pins a second 100,000-point run
as the Loss pane's baseline, so two long runs are smoothed, aligned and drawn together.

Reports per variant (medians over rounds):
- first paint: from the top of the process (before textual is imported) to the first frame
  that shows every pane's data, the loss plot included (less the time the bench spends making
  its replay data). Target: under 1.5 s.
- idle CPU: process CPU time (all threads) per wall second over IDLE_S at a 1 s refresh, with
  the replayed data changing every tick and the loss series growing. Target: under 5% of a core.
- key latency: from a key event posted to the first frame that shows its effect, while the data
  refreshes (cursor down in the 50-endpoint table, and the loss plot's log-scale toggle, which
  replots the 100,000 points). Target: p95 under 100 ms.

Frames are rendered to terminal escape sequences (as a real terminal would get), then dropped.
Usage: python bench/tui.py [--rounds 2] [--idle-s 10]
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402  (the clock starts before any import)
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGETS = {"first_paint_s": 1.5, "idle_cpu_pct": 5.0, "key_latency_p95_ms": 100.0}


# ---- the child: one variant in a fresh process -----------------------------------------------


class ReplaySource:
    """The replay data with a moving tick: every read is new data, the loss grows each tick."""

    def __init__(self, loaded: bool, overlay: bool = False) -> None:
        from console import replay

        self.replay, self.loaded, self.tick = replay, loaded, 0
        self.full_loss = replay.loss(100_000) if loaded else None
        self.baseline = replay.baseline_loss(100_000) if overlay else None

    def gpus(self):
        self.tick += 1
        return self.replay.gpus(8, self.tick) if self.loaded else self.replay.no_gpu()

    def endpoints(self):
        from console.data import EndpointsPanel

        return self.replay.endpoints(50, self.tick) if self.loaded else EndpointsPanel()

    def models(self):
        return self.replay.models()

    def jobs(self):
        from console.data import JobsPanel

        return self.replay.jobs() if self.loaded else JobsPanel()

    def loss(self, job_id):
        from dataclasses import replace

        from console.data import LossSeries

        if not self.loaded:
            return LossSeries(None, status="no-job", reason="no job selected")
        if self.baseline is not None and job_id == self.baseline.job_id:
            return self.baseline  # a finished run: the same series every read
        shown = 99_000 + min(self.tick, 1000)  # the run goes on: new points every tick
        full = self.full_loss
        return replace(full, train_steps=full.train_steps[:shown], train_loss=full.train_loss[:shown])

    def events(self):
        return self.replay.events()

    def availability(self):
        return self.replay.snapshot().availability


def bench_app_class():
    from console.app import ModeldeckApp

    class BenchApp(ModeldeckApp):
        """Renders each frame to escape sequences and notes when it did."""

        frame_hooks: list = []

        def _display(self, screen, renderable) -> None:
            super()._display(screen, renderable)
            if renderable is not None and hasattr(renderable, "render_segments"):
                renderable.render_segments(self.console)
            now = time.perf_counter()
            for hook in list(self.frame_hooks):
                hook(now)

    return BenchApp


async def next_frame_where(app, condition, timeout: float = 5.0) -> float:
    """The time of the first frame drawn once condition() holds."""
    import asyncio

    seen = asyncio.get_running_loop().create_future()

    def hook(now: float) -> None:
        if not seen.done() and condition():
            seen.set_result(now)

    app.frame_hooks.append(hook)
    try:
        return await asyncio.wait_for(seen, timeout)
    finally:
        app.frame_hooks.remove(hook)


async def measure(variant: str, idle_s: float, presses: int) -> dict:
    import asyncio
    import resource

    from textual import events

    from engine.deck import Deck

    app_class = bench_app_class()
    home = Path(sys.argv[sys.argv.index("--home") + 1])
    loaded = variant != "empty"
    building = time.perf_counter()
    source = ReplaySource(loaded, overlay=variant == "overlay")
    replay_build_s = time.perf_counter() - building  # the bench's data, not the console's work
    app = app_class(Deck.at(home), source, refresh_s=1.0)
    app.frame_hooks = []
    result: dict = {}
    async with app.run_test(size=(160, 50)) as pilot:
        loss = app.dashboard.query_one("#loss")
        painted = await next_frame_where(
            app, lambda: app.dashboard.data_ready and (not loaded or bool(loss.series.train_loss)),
            timeout=30)
        result["first_paint_s"] = painted - PROCESS_START - replay_build_s
        if source.baseline is not None:  # pinned as a user would, then drawn before the idle
            app.dashboard.pin_baseline(source.baseline.job_id)
            await next_frame_where(app, lambda: loss.baseline is not None, timeout=30)
        await pilot.pause(1.0)
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        wall_before = time.perf_counter()
        await asyncio.sleep(idle_s)
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        result["idle_cpu_pct"] = 100.0 * cpu / (time.perf_counter() - wall_before)
        result["latencies_ms"] = await key_latencies(app, presses, events)
    return result


async def key_latencies(app, presses: int, events) -> list[float]:
    import asyncio

    endpoints = app.dashboard.query_one("#endpoints")
    if endpoints.table.row_count < 2:  # the empty deck: its models table takes the cursor keys
        endpoints = app.dashboard.query_one("#models")
    loss = app.dashboard.query_one("#loss")
    latencies = []
    for index in range(presses):
        if index % 2 == 0:  # cursor down (or up) in the endpoints (or models) table
            table = endpoints.table
            table.focus()
            await asyncio.sleep(0.05)
            before = table.cursor_row
            key = "down" if before < max(0, table.row_count - 1) and index % 4 == 0 else "up"
            condition = lambda t=table, b=before: t.cursor_row != b  # noqa: E731
            started = time.perf_counter()
            app.post_message(events.Key(key, None))
        else:  # the loss plot's log-scale toggle
            wanted = not loss.log_scale
            condition = lambda w=wanted: loss.log_scale == w  # noqa: E731
            started = time.perf_counter()
            app.post_message(events.Key("l", "l"))
        shown = await next_frame_where(app, condition)
        latencies.append((shown - started) * 1000)
        await asyncio.sleep(0.2)  # presses land at different points of the refresh cycle
    return latencies


def child(variant: str, idle_s: float, presses: int) -> None:
    import asyncio

    result = asyncio.run(measure(variant, idle_s, presses))
    print(json.dumps(result))


# ---- the parent: interleave variants, report medians and ratios ------------------------------


def run_variant(variant: str, idle_s: float, presses: int, home: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--idle-s", str(idle_s),
         "--presses", str(presses), "--home", str(home)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summarize(runs: list[dict]) -> dict:
    latencies = [value for run in runs for value in run["latencies_ms"]]
    return {"first_paint_s": statistics.median(run["first_paint_s"] for run in runs),
            "idle_cpu_pct": statistics.median(run["idle_cpu_pct"] for run in runs),
            "key_latency_median_ms": statistics.median(latencies),
            "key_latency_p95_ms": p95(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--child")
    parser.add_argument("--home")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.idle_s, args.presses)
        return 0
    import tempfile

    variants = ("empty", "loaded", "overlay")
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as home:
        for _ in range(args.rounds):
            for variant in variants:  # interleaved: load swings hit them alike
                runs[variant].append(run_variant(variant, args.idle_s, args.presses, Path(home)))
    empty, loaded, overlay = (summarize(runs[variant]) for variant in variants)
    print(f"{'measure':<24}{'empty deck':>12}{'8 GPU/50 ep/100k':>18}{'+ 100k baseline':>17}"
          f"{'ratio':>8}{'target':>12}")
    for key in ("first_paint_s", "idle_cpu_pct", "key_latency_median_ms", "key_latency_p95_ms"):
        ratio = overlay[key] / empty[key] if empty[key] else float("nan")
        target = TARGETS.get(key)
        worst = max(loaded[key], overlay[key])
        verdict = "" if target is None else (f"<{target:g} " + ("ok" if worst < target else "MISS"))
        print(f"{key:<24}{empty[key]:>12.3f}{loaded[key]:>18.3f}{overlay[key]:>17.3f}"
              f"{ratio:>8.2f}{verdict:>12}")
    print(json.dumps({"schema": "modeldeck.bench.tui/2", "empty": empty, "loaded": loaded,
                      "overlay": overlay, "rounds": args.rounds, "idle_s": args.idle_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
