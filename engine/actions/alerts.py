"""Alert verbs: `modeldeck alerts` (the log: fired, resolved, undelivered), the rules in force,
the alert service the sampling processes (watch, the console) run, and `modeldeck monitor`."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.validate import parse_duration

MAX_SINCE_S = 366 * 86400.0


@dataclass(frozen=True)
class AlertsRequest:
    since: str | None = None  # an ISO date/time (local time unless it says) or a duration: 2h


@dataclass(frozen=True)
class AlertList:
    since: float | None
    records: tuple[dict[str, Any], ...]
    firing: tuple[dict[str, Any], ...] = ()  # fired and not resolved (as of the whole log)

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "alerts": list(self.records), "firing": list(self.firing)}


def parse_since(text: str, now: float | None = None) -> float:
    """Unix time from `2026-11-26`, `2026-11-26T02:00[:00][+00:00|Z]` or a duration back from
    now (`90s`, `30m`, `2h`, `3d`)."""
    now = time.time() if now is None else now
    stripped = text.strip()
    days = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*d", stripped)
    if days:
        return now - parse_duration("--since", float(days.group(1)) * 86400, 0, MAX_SINCE_S)
    if re.fullmatch(r"[0-9.]+\s*(ms|s|m|h)?", stripped):
        return now - parse_duration("--since", stripped, 0, MAX_SINCE_S)
    try:
        return datetime.fromisoformat(stripped.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        shown = stripped if len(stripped) <= 60 else stripped[:60] + "..."
        raise BadInput(f"--since must be an ISO date/time (2026-11-26T02:00) or a duration "
                       f"(90s, 30m, 2h, 3d), not {shown!r}") from None


def list_alerts(deck: Deck, request: AlertsRequest) -> AlertList:
    from engine.telemetry.alerts import log

    since = parse_since(request.since) if request.since is not None else None
    records, _ = log.read_from(deck.paths)
    firing_keys = set(key for key, _ in log.still_firing(records))
    last_fired = {(r.get("rule"), r.get("subject")): r for r in records if r.get("state") == "fired"}
    shown = tuple(r for r in records if since is None or float(r.get("t", 0)) >= since)
    return AlertList(since, shown, tuple(last_fired[key] for key in sorted(firing_keys)
                                         if key in last_fired))


def alert_rules(deck: Deck) -> list[dict[str, Any]]:
    """The rules in force: the defaults merged with deck.toml's [[alerts]]."""
    from engine.alert_settings import effective_rules

    return [rule.public() for rule in effective_rules(deck.config.alerts)]


def alert_service(deck: Deck) -> Any:
    """An AlertService for a process that samples (call observe(snapshot) each tick, close())."""
    from engine.telemetry.alerts.service import AlertService

    return AlertService(deck.paths, deck.config.alerts)


def alert_feed(deck: Deck, from_start: bool = False) -> Any:
    """New alert-log records as they are appended (`.new()`): what a console shows."""
    from engine.telemetry.alerts.log import Feed

    return Feed(deck.paths, from_start)


# ---- the monitor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorRequest:
    detach: bool = False
    stop: bool = False
    interval_s: float | None = None
    count: int | None = None  # foreground only: stop after N ticks


@dataclass(frozen=True)
class MonitorResult:
    state: str  # running | stopped | not-running | finished
    pid: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "pid": self.pid, **self.detail}


def monitor_state(deck: Deck) -> MonitorResult:
    from engine.telemetry.alerts.monitor import running_monitor

    info = running_monitor(deck.paths)
    return MonitorResult("running", info["pid"], info) if info else MonitorResult("not-running")


def monitor(deck: Deck, request: MonitorRequest,
            on_record: Callable[[dict[str, Any]], None] = lambda record: None,
            stop: threading.Event | None = None) -> MonitorResult:
    from engine.telemetry.alerts import monitor as daemon

    if request.interval_s is not None and not 0.05 <= request.interval_s <= 3600:
        raise BadInput("--interval must be between 0.05 and 3600 seconds")
    if request.stop:
        stopped = daemon.stop_monitor(deck.paths)
        return MonitorResult("stopped", stopped["pid"], stopped) if stopped \
            else MonitorResult("not-running")
    running = daemon.running_monitor(deck.paths)
    if running is not None:
        raise ActionFailed(f"a monitor already runs for this deck (pid {running['pid']}); "
                           "stop it with `modeldeck monitor --stop`")
    _ = deck.config  # a broken deck.toml is exit 2 here, not in a detached process's log
    if request.detach:
        info = daemon.spawn(deck, request.interval_s)
        if "exit" in info:
            raise ActionFailed(f"the monitor did not start (see {deck.paths.run / 'monitor.log'})")
        return MonitorResult("running", info["pid"], info)
    ticks = daemon.run(deck, request.interval_s, request.count, on_record,
                       stop or threading.Event())
    return MonitorResult("finished", None, {"ticks": ticks})
