"""`modeldeck status`: cheap by design (no torch, no textual; tests/test_import_rules.py)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.deck import Deck
from engine.registry.records import Deployment


@dataclass(frozen=True)
class StatusReport:
    home: str
    model_count: int
    version_count: int
    deployments: tuple[Deployment, ...]
    server: dict[str, Any] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)
    jobs: dict[str, int] = field(default_factory=dict)  # job counts by state
    warnings: tuple[str, ...] = ()  # e.g. the server is reachable from other machines without a key
    monitor: dict[str, Any] = field(default_factory=dict)  # `modeldeck monitor --detach`: state, pid

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["deployments"] = [d.to_dict() for d in self.deployments]
        data["warnings"] = list(self.warnings)
        return data


def status(deck: Deck) -> StatusReport:
    """Cheap by design: no torch, no textual (a test checks the imports); deck.toml is validated
    (pydantic, about 100 ms) so a broken file fails here as it does everywhere else."""
    registry = deck.registry
    models, versions = registry.counts()
    server = local_server_state(deck)
    return StatusReport(home=str(deck.paths.home), model_count=models,
                        version_count=versions, deployments=tuple(registry.deployments()),
                        server=server, jobs=_job_counts(deck),
                        warnings=tuple(server.get("warnings", ())), monitor=_monitor(deck))


def _monitor(deck: Deck) -> dict[str, Any]:
    from engine.actions.alerts import monitor_state  # light: pid file and /proc only

    return monitor_state(deck).to_dict()


def _job_counts(deck: Deck) -> dict[str, int]:
    from engine.jobs import job_counts  # reads small state files only, no torch

    return job_counts(deck)


def local_server_state(deck: Deck) -> dict[str, Any]:
    """The embedded server's state from run/server.json: a missing or dead server is data.
    warnings: what a user must know about a running one (reachable from other machines with /v1
    open to anyone)."""
    from engine.procs import process_alive
    from engine.runstate import (START_LOCK, lock_held, read_engine_info,  # light: no torch
                                 read_server_info)

    info = read_server_info(deck.paths)
    if info is None:
        # A start in progress holds the start lock while the model loads (server.json comes
        # after): `starting`, as the console's Throughput pane says too.
        state = "starting" if lock_held(deck.paths, START_LOCK) else "stopped"
        return {"state": state, "pid": None, "url": None, "warnings": []}
    alive = process_alive(info.pid)
    return {"state": "running" if alive else "stale", "pid": info.pid, "url": info.url,
            "host": info.host, "api_key": info.api_key_set, "started_at": info.started_at,
            "warnings": info.warnings if alive else [],
            "engine": read_engine_info(deck.paths, info.pid) if alive else None}
