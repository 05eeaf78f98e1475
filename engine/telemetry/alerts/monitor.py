"""`modeldeck monitor`: sample and evaluate alerts on a box nobody is looking at.

In the foreground it prints each alert as it is announced; `--detach` runs
`python -m engine.telemetry.alerts.monitor --home H [--config F] [--interval S]` in its own
session (an SSH drop does not stop it), which records its pid in run/monitor.json and removes it
on SIGTERM (`monitor --stop`). It evaluates only while it holds the deck's alert lock (see
service.py): with a console open it waits its turn rather than announcing twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.fsutil import write_atomically
from engine.paths import DeckPaths
from engine.procs import process_alive

START_WAIT_S = 20.0


def pid_file(paths: DeckPaths) -> Path:
    return paths.run / "monitor.json"


def running_monitor(paths: DeckPaths) -> dict[str, Any] | None:
    """The detached monitor's pid file while its process lives, else None."""
    try:
        info = json.loads(pid_file(paths).read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid") if isinstance(info, dict) else None
    return info if isinstance(pid, int) and process_alive(pid) else None


def run(deck: Deck, interval_s: float | None, count: int | None,
        on_record: Callable[[dict[str, Any]], None], stop: threading.Event) -> int:
    """Tick until `stop` is set or `count` ticks ran; returns the number of ticks."""
    from engine.telemetry import build_sampler
    from engine.telemetry.alerts.service import AlertService

    service = AlertService(deck.paths, deck.config.alerts)
    ticks = 0
    with build_sampler(deck, interval_s=interval_s) as sampler:
        try:
            deadline = time.monotonic()
            while not stop.is_set() and (count is None or ticks < count):
                for record in service.observe(sampler.tick()):
                    on_record(record)
                ticks += 1
                deadline = max(deadline + sampler.interval_s, time.monotonic())
                if count is None or ticks < count:
                    stop.wait(deadline - time.monotonic())
        finally:
            service.close()
    return ticks


def spawn(deck: Deck, interval_s: float | None) -> dict[str, Any]:
    """Start the detached monitor and wait until it has written its pid file."""
    deck.paths.run.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "engine.telemetry.alerts.monitor", "--home", str(deck.paths.home)]
    if deck.config.source is not None:
        command += ["--config", str(deck.config.source)]
    if interval_s is not None:
        command += ["--interval", repr(interval_s)]
    with (deck.paths.run / "monitor.log").open("ab") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        info = running_monitor(deck.paths)
        if info is not None and info["pid"] == process.pid:
            return info
        if process.poll() is not None:
            break
        time.sleep(0.05)
    return {"pid": process.pid, "exit": process.poll()}


def stop_monitor(paths: DeckPaths, timeout_s: float = 15.0) -> dict[str, Any] | None:
    """SIGTERM the detached monitor and wait for it to go; its pid file, or None if none ran."""
    info = running_monitor(paths)
    if info is None:
        return None
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process_alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(info["pid"]):
        os.kill(info["pid"], signal.SIGKILL)
    return info


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="engine.telemetry.alerts.monitor")
    parser.add_argument("--home", required=True)
    parser.add_argument("--config")
    parser.add_argument("--interval", type=float)
    args = parser.parse_args(argv)
    deck = Deck.at(args.home, args.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    info = {"pid": os.getpid(), "started_at": time.time(), "interval_s": args.interval,
            "config": args.config}
    write_atomically(pid_file(deck.paths), json.dumps(info))
    try:
        run(deck, args.interval, None, lambda record: print(record["message"], flush=True), stop)
    finally:
        if (running_monitor(deck.paths) or {}).get("pid") == os.getpid():
            pid_file(deck.paths).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
