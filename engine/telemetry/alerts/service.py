"""Alert evaluation inside the process that samples (`watch`, the console, `monitor`).

`AlertService.observe(snapshot)` is called once per sampling tick: it reads the rules'
subjects, steps the state machine, and for each announcement appends a record to the alert log
and hands it to the sinks (queued; the tick never waits for a webhook or a command).

One evaluator per deck: several samplers may run at once (a monitor daemon and a console), and
each alert must be announced once, so only the process holding run/locks/alerts evaluates; the
others try to take the lock on each tick and, until they do, only show the log. The one that
takes over restores the alerts still firing from the log, so it does not announce them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from engine.alert_settings import AlertRule, effective_rules
from engine.paths import DeckPaths
from engine.runstate import run_lock
from engine.snapshots import TelemetrySnapshot
from engine.telemetry.alerts import log
from engine.telemetry.alerts.machine import AlertMachine, Key, Timing, Transition
from engine.telemetry.alerts.sinks import Sinks
from engine.telemetry.alerts.subjects import Subject, SubjectReader

LOCK_NAME = "alerts"


class AlertService:
    def __init__(self, paths: DeckPaths, rules: tuple[AlertRule, ...],
                 clock: Callable[[], float] = time.time, exclusive: bool = True) -> None:
        """rules: deck.toml's [[alerts]] (the defaults are merged in here). clock: wall time
        (records carry it; tests step a fake one). exclusive=False evaluates without the
        deck's lock (tests of one process)."""
        self.paths, self.clock, self.exclusive = paths, clock, exclusive
        self.rules = {rule.name: rule for rule in effective_rules(rules)}
        self.expressions = {name: rule.expression for name, rule in self.rules.items()}
        self.timings = {name: Timing(rule.for_s or 0.0, rule.suppress_s or 0.0)
                        for name, rule in self.rules.items()}
        self.reader = SubjectReader(paths, {e.subject for e in self.expressions.values()})
        self.machine = AlertMachine()
        self.values: dict[Key, tuple[Subject, dict[str, Any]]] = {}
        self._lock: ExitStack | None = None
        self._sinks: Sinks | None = None

    @property
    def leading(self) -> bool:
        return self._lock is not None or not self.exclusive

    def observe(self, snapshot: TelemetrySnapshot) -> list[dict[str, Any]]:
        """One tick: the records announced (empty when another process evaluates)."""
        if not self._lead():
            return []
        now = self.clock()
        observed: dict[Key, bool] = {}
        for subject in self.reader.read(snapshot, now):
            for name, expression in self.expressions.items():
                if expression.subject != subject.kind:
                    continue
                key = (name, subject.key)
                observed[key] = expression.holds(subject.lookup)
                if observed[key] or key in self.machine.states:
                    self.values[key] = (subject, {".".join((subject.kind, *path)): subject.lookup(path)
                                                  for path in expression.paths})
                else:
                    self.values.pop(key, None)
        return [self._announce(transition) for transition in
                self.machine.step(observed, self.timings, now)]

    def _lead(self) -> bool:
        if self.leading:
            return True
        stack = ExitStack()
        if not stack.enter_context(run_lock(self.paths, LOCK_NAME)):
            stack.close()
            return False
        self._lock = stack
        records, _ = log.read_from(self.paths)
        self.machine.restore(((rule, subject), at) for (rule, subject), at
                             in log.still_firing(records) if rule in self.rules)
        return True

    def _announce(self, transition: Transition) -> dict[str, Any]:
        rule = self.rules[transition.key[0]]
        subject, values = self.values.get(transition.key, (None, {}))
        if transition.state == "resolved":
            self.values.pop(transition.key, None)
        record: dict[str, Any] = {
            "t": transition.at, "state": transition.state, "rule": rule.name,
            "subject": transition.key[1], "kind": transition.key[1].split(":", 1)[0],
            "severity": rule.severity, "when": rule.when, "values": values,
            "message": message(rule, transition, values), "bell": rule.bell}
        if transition.state == "resolved":
            record.update(fired_at=transition.fired_at, flaps=transition.flaps,
                          duration_s=round(transition.at - transition.fired_at, 3))
        record = log.append(self.paths, record)
        if rule.webhook or rule.command:
            self.sinks.deliver(rule, record)
        return record

    @property
    def sinks(self) -> Sinks:
        if self._sinks is None:
            self._sinks = Sinks(self._undelivered)
        return self._sinks

    def _undelivered(self, sink: str, reason: str, record: dict[str, Any]) -> None:
        log.append(self.paths, {"state": "undelivered", "rule": record.get("rule"),
                                "subject": record.get("subject"), "sink": sink, "reason": reason,
                                "of": record.get("state")})

    def close(self, wait_s: float = 5.0) -> None:
        """Give queued deliveries up to `wait_s` seconds, then let the lock go."""
        if self._sinks is not None:
            self._sinks.close(wait_s)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def message(rule: AlertRule, transition: Transition, values: dict[str, Any]) -> str:
    shown = ", ".join(f"{path}={_value(value)}" for path, value in values.items())
    kind, _, name = transition.key[1].partition(":")
    subject = kind if name == kind else f"{kind} {name}"
    if transition.state == "fired":
        return f"{rule.name}: {subject}: {rule.when}" + (f" ({shown})" if shown else "")
    return (f"{rule.name}: {subject} resolved after "
            f"{transition.at - transition.fired_at:.0f} s"
            + (f" ({transition.flaps} flaps)" if transition.flaps else ""))


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)
