"""A server under bench/serve_vs_vllm.py's control: where to send requests, its process tree, the
CPU time it uses, and SIGSTOP/SIGCONT for the whole tree, so that an idle server that spin-waits
(vLLM's engine core) can be paused during the other server's turns.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

IDLE_WINDOW_S = 5.0


@dataclass
class Server:
    """A running server: where to send requests, its process group, and how to stop it."""
    label: str
    url: str
    model: str
    pid: int
    stop_fn: Callable[[], object]
    suspended: bool = False
    suspend_when_idle: bool = False

    def processes(self) -> list[Any]:
        import psutil

        try:
            leader = psutil.Process(self.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def signal_all(self, number: int) -> None:
        # Children are signalled one by one too: a server may put workers in groups of their own.
        for process in self.processes():
            try:
                process.send_signal(number)
            except Exception:  # noqa: BLE001 - gone already: nothing to pause or resume
                pass

    def suspend(self) -> None:
        if not self.suspended:
            self.signal_all(signal.SIGSTOP)
            self.suspended = True

    def resume(self) -> None:
        if self.suspended:
            self.signal_all(signal.SIGCONT)
            self.suspended = False

    def stop(self) -> None:
        self.resume()  # a stopped process would never handle the stop request
        self.stop_fn()


def idle_cpu(server: Server, window: float = IDLE_WINDOW_S) -> float:
    """Fraction of one core the server's processes use while no request is in flight."""
    before, started = server.cpu_seconds(), time.perf_counter()
    time.sleep(window)
    return (server.cpu_seconds() - before) / (time.perf_counter() - started)
