"""Where the panes' data comes from. Every method here may block, so the app calls them only
from thread workers. EngineSource adapts the engine; FixedSource replays given data (tests,
benchmarks, snapshots).

The engine's telemetry and jobs modules are imported when first needed and, when a module is
absent or does not offer what the pane needs, the pane gets 'not-available' data with the reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from console import present
from console.data import (Availability, DeckInfo, DeploymentRow, EndpointsPanel, EventRow,
                          EventsPanel, GpuPanel, JobsPanel, LossSeries, ModelRow, ModelsPanel,
                          Snapshot)
from console.discovered import DiscoveryWatch, discovery_enabled
from engine.deck import Deck


class DataSource(Protocol):
    def gpus(self) -> GpuPanel: ...
    def endpoints(self) -> EndpointsPanel: ...
    def models(self) -> ModelsPanel: ...
    def jobs(self) -> "JobsPanel": ...
    def loss(self, job_id: str | None) -> LossSeries: ...  # None: the newest job
    def events(self) -> EventsPanel: ...
    def availability(self) -> Availability: ...
    def deck_info(self) -> DeckInfo: ...


class FixedSource:
    """Returns the snapshot it was given (swap it with `set` to replay changing data)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.calls = 0

    def set(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def gpus(self) -> GpuPanel:
        self.calls += 1
        return self.snapshot.gpus

    def endpoints(self) -> EndpointsPanel:
        return self.snapshot.endpoints

    def models(self) -> ModelsPanel:
        return self.snapshot.models

    def jobs(self) -> JobsPanel:
        return self.snapshot.jobs

    def loss(self, job_id: str | None) -> LossSeries:
        return self.snapshot.loss

    def events(self) -> EventsPanel:
        return self.snapshot.events

    def availability(self) -> Availability:
        return self.snapshot.availability

    def deck_info(self) -> DeckInfo:
        return self.snapshot.deck


def optional_module(name: str) -> Any | None:
    """An engine module that may not exist yet (another part of the engine still being built)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@contextmanager
def fresh_deck(base: Deck) -> Iterator[Deck]:
    """A Deck for this thread: SQLite connections must not cross threads, workers do."""
    deck = Deck(base.paths, base.config_file, base._config)
    try:
        yield deck
    finally:
        deck.close()


class EngineSource:
    """The engine as the panes' source. Each poll runs in its own worker thread; the readers
    keep what makes the next read cheap (pollers for rates, event-file offsets)."""

    def __init__(self, deck: Deck, sampler: Any = None) -> None:
        """sampler: a function deck -> engine.telemetry.Sampler (tests replay GPUs); default
        engine.telemetry.build_sampler, the reader `modeldeck watch` uses too."""
        from console.adapters import JobReader, TelemetryReader

        self.deck = deck
        self._telemetry = TelemetryReader(deck, sampler)
        self._jobs = JobReader()
        self._alerts: tuple[Any, Any] | None = None  # (AlertService, log Feed), on first poll
        self._discovery = DiscoveryWatch(deck) if discovery_enabled() else None

    def gpus(self) -> GpuPanel:
        return self._telemetry.gpus()

    def endpoints(self) -> EndpointsPanel:
        panel = self._telemetry.endpoints()
        if self._discovery is None or panel.status != "ok":
            return panel
        found = self._discovery.rows(tuple(row.url for row in panel.endpoints))
        return dataclasses.replace(panel, endpoints=(*panel.endpoints, *found)) if found else panel

    def close(self) -> None:
        """Stops the sampler's threads (the app calls it when it exits)."""
        self._telemetry.close()
        if self._alerts is not None:
            self._alerts[0].close(wait_s=2.0)
        if self._discovery is not None:
            self._discovery.close()

    def alerts(self) -> tuple["AlertNotice", ...]:
        """The console samples, so it evaluates [[alerts]] (unless a monitor or another console
        does: engine.telemetry.alerts.service) and shows what the log gained since it opened."""
        from engine import actions

        if self._alerts is None:
            self._alerts = (actions.alert_service(self.deck), actions.alert_feed(self.deck))
        service, feed = self._alerts
        sampler = self._telemetry.current()
        if sampler is not None:
            service.observe(sampler.latest())
        return tuple(alert_notice(record) for record in feed.new())

    def jobs(self) -> JobsPanel:
        return self._jobs.jobs(optional_module("engine.jobs"), self.deck)

    def loss(self, job_id: str | None) -> LossSeries:
        return self._jobs.loss(optional_module("engine.jobs"), self.deck, job_id)

    # ---- registry ---------------------------------------------------------------------------

    def models(self) -> ModelsPanel:
        from engine import actions

        try:
            with fresh_deck(self.deck) as deck:
                versions = actions.list_models(deck)
                deployments = deck.registry.deployments()
                targets = deck.config.target_names
        except Exception as error:  # a broken deck.toml or database is shown, not raised
            return ModelsPanel(error=str(error))
        serving: dict[str, list[str]] = {}
        for deployment in deployments:
            serving.setdefault(deployment.ref, []).append(deployment.target)
        rows = tuple(model_row(version, tuple(serving.get(version.ref, ())))
                     for version in sorted(versions, key=lambda v: (v.model, -v.version)))
        return ModelsPanel(rows, tuple(DeploymentRow(d.target, d.ref, d.state) for d in deployments),
                           tuple(targets))

    def events(self) -> EventsPanel:
        from engine import actions

        try:
            with fresh_deck(self.deck) as deck:
                entries = actions.audit(deck, limit=100)
                outcomes = {entry.id: entry.outcome for entry in actions.history(deck, limit=200)}
        except Exception as error:
            return EventsPanel(error=str(error))
        return EventsPanel(audit_events(entries, outcomes))

    def availability(self) -> Availability:
        from console.adapters import engine_availability

        return engine_availability()

    def deck_info(self) -> DeckInfo:
        import socket

        return DeckInfo(socket.gethostname(), present.home_path(str(self.deck.paths.home)))


@dataclass(frozen=True)
class AlertNotice:
    """One alert-log record for the Events pane, a toast, and the bell when its rule asks."""

    row: EventRow
    toast: bool
    bell: bool


ALERT_LEVELS = {"critical": "error", "warning": "warning", "info": "info"}


def alert_notice(record: dict[str, Any]) -> AlertNotice:
    state = str(record.get("state"))
    if state == "undelivered":
        text = f"alert {record.get('rule')} not delivered: {record.get('sink')}: {record.get('reason')}"
        return AlertNotice(EventRow(float(record.get("t") or now()), "warning", text, origin="alert"),
                           False, False)
    level = ALERT_LEVELS.get(str(record.get("severity")), "warning") if state == "fired" else "info"
    row = EventRow(float(record.get("t") or now()), level, f"alert {state}: {record.get('message')}",
                   origin="alert", result=state)
    return AlertNotice(row, state == "fired", state == "fired" and bool(record.get("bell")))


def model_row(version: Any, serving_on: tuple[str, ...]) -> ModelRow:
    metrics = compression_summary(version.metrics) + tuple(
        (key, format_metric(value)) for key, value in sorted(version.metrics.items())
        if isinstance(value, (int, float, str)))
    parent = f"{version.model}@{version.parent_version}" if version.parent_version else None
    return ModelRow(version.ref, version.model, version.version, version.size_bytes, parent,
                    version.status, metrics, tuple(version.aliases), serving_on)


def compression_summary(metrics: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A compressed version's report against its parent, in three numbers that decide a deploy:
    perplexity change, decode speed-up and size ratio (the full report: enter, `models show`)."""
    report = metrics.get("compression")
    change = report.get("change") if isinstance(report, dict) else None
    if not isinstance(change, dict):
        return ()
    pairs = (("Δppl", change.get("perplexity_pct"), "{:+.1f}%"),
             ("speed", change.get("decode_speedup"), "x{:.2f}"),
             ("size", change.get("size_ratio"), "x{:.2f}"))
    return tuple((name, template.format(value)) for name, value, template in pairs
                 if isinstance(value, (int, float)))


def format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


FAILED_RESULTS = ("failed", "error", "gate-failed", "interrupted")
WARNING_RESULTS = ("rejected", "rolled-back", "cancelled", "pending", "cancelling")


def audit_events(entries: list[Any], outcomes: dict[int, str]) -> tuple[EventRow, ...]:
    """One row per action, its result as it stands (the registry reads a move's result from its
    history row; `outcomes` also covers rows read before that). A failed gate also appends
    its own 'failed' row with the gate's report; that row stands for the action, and the
    row of the move is left out."""
    failed_keys = {(entry.verb, _argument_key(entry.arguments)) for entry in entries
                   if entry.history_id is None and str(entry.result).lower() in FAILED_RESULTS}
    rows = []
    for entry in entries:
        result = str(entry.result)
        if entry.history_id is not None:
            result = outcomes.get(entry.history_id, result)
            if result in FAILED_RESULTS and (entry.verb, _argument_key(entry.arguments)) in failed_keys:
                continue  # the failed row after it says the same, with the reason
        rows.append(audit_event(entry, result))
    return tuple(rows)


def _argument_key(arguments: Any) -> str:
    return repr(sorted(arguments.items())) if isinstance(arguments, dict) else ""


def audit_event(entry: Any, result: str | None = None) -> EventRow:
    result = str(entry.result if result is None else result)
    lowered = result.lower()
    level = ("error" if lowered in FAILED_RESULTS or lowered.startswith("fail")
             else "warning" if lowered in WARNING_RESULTS else "info")
    arguments = entry.arguments if isinstance(entry.arguments, dict) else {}
    shown_arguments = tuple((str(key), present.plain(value)) for key, value in arguments.items()
                            if value not in (None, False, ""))
    reason = str(entry.reason or "")
    text = f"{action_words(entry.verb, arguments)}: {result}"
    if reason and level != "info":
        text += f" ({reason})"
    return EventRow(entry.at, level, text, origin="audit", verb=str(entry.verb), result=result,
                    user=str(entry.user or ""), arguments=shown_arguments,
                    detail=str(entry.detail or ""), reason=reason)


def action_words(verb: str, arguments: dict[str, Any]) -> str:
    """The action in a few words (`deploy smollm2@3 to local`); unknown verbs list their
    arguments."""
    get = arguments.get
    if verb == "deploy" and get("ref"):
        return f"deploy {get('ref')} to {get('target', 'local')}"
    if verb == "rollback" and get("target"):
        return f"rollback {get('target')}" + (f" to {get('to')}" if get("to") else "")
    if verb == "auto-rollback" and get("target"):
        return f"auto-rollback {get('target')} from {get('from', '?')} to {get('to', '?')}"
    if verb == "import" and get("name"):
        return f"import {get('name')}@{get('version', '?')}"
    if verb == "compress" and get("ref"):
        made = f" as @{get('version')}" if get("version") else ""
        return f"compress {get('ref')} ({get('method', '?')}){made}"
    if verb == "finetune" and get("parent"):
        job = f" job {present.short_job_id(str(get('job_id')))}" if get("job_id") else ""
        made = f" as @{get('version')}" if get("version") else ""
        return f"fine-tune {get('parent')}{job}{made}"
    if verb in ("cancel_job", "resume_job") and get("job_id"):
        return f"{verb.replace('_job', '')} job {present.short_job_id(str(get('job_id')))}"
    if verb == "alias" and get("ref"):
        return f"alias {get('ref')} as {get('alias', '?')}"
    shown = " ".join(f"{key}={present.plain(value)}" for key, value in arguments.items()
                     if value not in (None, False, ""))
    return f"{verb} {shown}".strip()


def now() -> float:
    return time.time()
