"""The fleet's state: every `[[hosts]]` entry polled over ssh, concurrently.

Each host answers with its own `modeldeck status --json` (and, for watch, one
`modeldeck watch --json --count 1 --local` snapshot) through one ssh session. A host is
  up     it answered within stale_after_s,
  stale  it answered, later than that (the numbers are shown with their age),
  down   it did not answer (ssh's reason, one line: "connection refused", "timed out", ...).
Totals add up the hosts that answered: GPUs, GPU and host memory, tokens/s, running jobs.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.host_settings import HostSettings
from engine.remote.ssh import SshResult, remote_command, run_command

MAX_PARALLEL = 16


@dataclass(frozen=True)
class HostState:
    name: str
    ssh: str
    state: str  # up | stale | down
    reason: str | None
    elapsed_s: float
    taken_at: float
    status: dict[str, Any] | None = None  # the host's `status --json`
    watch: dict[str, Any] | None = None  # its `watch --json` snapshot (fleet watch only)

    @property
    def answered(self) -> bool:
        return self.state != "down"

    def summary(self) -> dict[str, Any]:
        """What the totals and the console's table read, from whichever documents came back."""
        status, watch = self.status or {}, self.watch or {}
        devices = (watch.get("gpus") or {}).get("devices") or []
        memory = watch.get("host") or {}
        rates = [model.get("tokens_per_s") for model in watch.get("models") or []] or \
            [endpoint.get("tokens_per_s") for endpoint in watch.get("endpoints") or []]
        known_rates = [rate for rate in rates if isinstance(rate, (int, float))]
        return {
            "gpus": len(devices),
            "gpu_memory_used_bytes": _total(devices, "memory_used_bytes"),
            "gpu_memory_total_bytes": _total(devices, "memory_total_bytes"),
            "memory_used_bytes": memory.get("memory_used_bytes"),
            "memory_total_bytes": memory.get("memory_total_bytes"),
            "tokens_per_s": sum(known_rates) if known_rates else None,
            "running_jobs": (status.get("jobs") or {}).get("running"),
            "serving": [d.get("ref") for d in status.get("deployments") or []
                        if d.get("target") == "local"],
            "server": (status.get("server") or {}).get("state"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary() if self.answered else None}


@dataclass(frozen=True)
class FleetSnapshot:
    hosts: tuple[HostState, ...]
    taken_at: float = field(default_factory=time.time)

    @property
    def totals(self) -> dict[str, Any]:
        summaries = [host.summary() for host in self.hosts if host.answered]
        totals: dict[str, Any] = {"hosts": len(self.hosts),
                                  **{state: sum(h.state == state for h in self.hosts)
                                     for state in ("up", "stale", "down")}}
        for key in ("gpus", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
                    "memory_used_bytes", "memory_total_bytes", "tokens_per_s", "running_jobs"):
            known = [s[key] for s in summaries if isinstance(s[key], (int, float))]
            totals[key] = sum(known) if known else None
        return totals

    def host(self, name: str) -> HostState | None:
        return next((host for host in self.hosts if host.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"taken_at": self.taken_at, "hosts": [host.to_dict() for host in self.hosts],
                "totals": self.totals}


def poll_fleet(run_dir: Path, hosts: tuple[HostSettings, ...], *,
               with_watch: bool = False) -> FleetSnapshot:
    """Every host at once (one ssh session each, over its shared connection)."""
    if not hosts:
        return FleetSnapshot(())
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
        states = pool.map(lambda host: poll_host(run_dir, host, with_watch=with_watch), hosts)
        return FleetSnapshot(tuple(states))


def poll_host(run_dir: Path, host: HostSettings, *, with_watch: bool = False) -> HostState:
    command = remote_command(host, ["status", "--json"])
    if with_watch:  # one session for both: one round trip over the shared connection
        command += " && " + remote_command(host, ["watch", "--json", "--count", "1", "--local"])
    result = run_command(run_dir, host, command)
    return _state(host, result, with_watch)


def _state(host: HostSettings, result: SshResult, with_watch: bool) -> HostState:
    now = time.time()
    if not result.ok:
        return HostState(host.name, host.ssh, "down", result.reason(), result.elapsed_s, now)
    documents = _documents(result.stdout)
    status, watch = documents.get("status"), documents.get("watch")
    if status is None or (with_watch and watch is None):
        return HostState(host.name, host.ssh, "down", "the host's modeldeck answered no "
                         "status document (check the host's `modeldeck` setting)",
                         result.elapsed_s, now)
    late = result.elapsed_s > host.stale_after_s
    reason = f"answered after {result.elapsed_s:.1f} s" if late else None
    return HostState(host.name, host.ssh, "stale" if late else "up", reason, result.elapsed_s,
                     now, status, watch)


def _documents(stdout: bytes) -> dict[str, dict[str, Any]]:
    """kind -> document, from the JSON lines a host printed (anything else is skipped)."""
    found: dict[str, dict[str, Any]] = {}
    for line in stdout.decode("utf-8", "replace").splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("kind"), str):
            found[document["kind"]] = document
    return found


def _total(rows: list[dict[str, Any]], key: str) -> int | None:
    known = [row.get(key) for row in rows if isinstance(row.get(key), int)]
    return sum(known) if known else None  # type: ignore[arg-type]
