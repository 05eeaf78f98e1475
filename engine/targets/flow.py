"""The deploy flow shared by every remote target kind.

  lock the target -> check it is reachable (else exit 1, registry unchanged) -> record the
  deploy as pending -> apply -> gate -> active, or: failed, revert, automatic rollback recorded
  with the gate's reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.config import TargetSettings
from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.paths import DeckPaths
from engine.registry.records import HistoryEntry, VersionInfo
from engine.targets.base import GateReport, TargetDriver


def driver_for(settings: TargetSettings, paths: DeckPaths | None = None) -> TargetDriver:
    if settings.kind == "command":
        from engine.targets.command import CommandTarget

        return CommandTarget(settings)
    if settings.kind == "vllm-lora":
        from engine.targets.vllm_lora import VllmLoraTarget

        return VllmLoraTarget(settings)
    if settings.kind == "modeldeck":
        from engine.targets.remote_deck import RemoteDeckTarget

        return RemoteDeckTarget(settings, paths)
    if settings.kind == "ray-serve":
        from engine.targets.ray_serve import RayServeTarget

        return RayServeTarget(settings, paths)
    raise BadInput(f"target {settings.name!r}: unknown kind {settings.kind!r}")


@contextmanager
def target_lock(paths: DeckPaths, target: str) -> Iterator[None]:
    """Two deploys to one target never run at once (across processes)."""
    from engine.runstate import run_lock

    with run_lock(paths, f"{target}.lock") as held:
        if not held:
            raise ActionFailed(f"another deploy to target {target!r} is in progress")
        yield


def deliver(deck: Deck, action: str, target: str, chosen: VersionInfo,
            current: VersionInfo | None, reason: str | None, arguments: dict,
            driver: TargetDriver | None = None) -> HistoryEntry:
    """Deploy or roll back `target` to `chosen`; `current` is what it last served successfully.
    The driver defaults to the configured kind's (the local server passes its own)."""
    if driver is None:
        settings = deck.config.target(target)
        if settings is None:
            raise BadInput(f"unknown target {target!r}")
        driver = driver_for(settings, deck.paths)
    driver.validate(chosen)
    with target_lock(deck.paths, target):
        health = driver.check()
        if not health.reachable:
            _audit_failure(deck, action, arguments, f"target unreachable: {health.detail}", reason)
            raise ActionFailed(f"target {target!r} cannot be reached: {health.detail}; nothing changed")
        files = deck.registry.materialize(chosen) if driver.needs_files else None
        _settle_interrupted(deck, target)
        entry = deck.registry.move_pointer(target, chosen, action=action, reason=reason,
                                           arguments=arguments, state="pending")
        report = _apply_and_gate(driver, chosen, files, rollback=action == "rollback")
        if report.passed:
            driver.commit(chosen, current)
            deck.registry.set_outcome(target, entry.id, "ok", "active")
            return deck.registry.recorded_entry(entry.id)
        _fail_and_revert(deck, driver, entry, chosen, current, report, arguments)
    raise AssertionError("unreachable")


def _settle_interrupted(deck: Deck, target: str) -> None:
    """A deploy still pending while we hold the lock was interrupted (its process died)."""
    deployment = deck.registry.deployment(target)
    if deployment is not None and deployment.state == "pending":
        deck.registry.set_outcome(target, deployment.history_id, "interrupted", "failed")


def _apply_and_gate(driver: TargetDriver, chosen: VersionInfo, files: Path | None,
                    rollback: bool) -> GateReport:
    from engine.targets.base import GateCheck

    try:
        driver.apply(chosen, files, rollback=rollback)
    except ActionFailed as error:
        return GateReport(False, (GateCheck("apply", False, detail=str(error)),))
    return driver.gate(chosen)


def _fail_and_revert(deck: Deck, driver: TargetDriver, entry: HistoryEntry, chosen: VersionInfo,
                     current: VersionInfo | None, report: GateReport, arguments: dict) -> None:
    target = entry.target
    deck.registry.set_outcome(target, entry.id, "failed", "failed")
    detail = json.dumps(report.to_dict())
    if current is None:
        _audit_failure(deck, entry.action, arguments, detail, report.reason)
        raise ActionFailed(f"{chosen.ref} on {target!r}: {report.reason}; nothing served before")
    driver.revert(chosen, current, deck.registry.materialize(current) if driver.needs_files else None)
    deck.registry.move_pointer(target, current, action="auto-rollback", reason=report.reason,
                               arguments={"target": target, "from": chosen.ref, "to": current.ref})
    _audit_failure(deck, entry.action, arguments, detail, report.reason)
    raise ActionFailed(f"{chosen.ref} on {target!r}: {report.reason}; rolled back to {current.ref}")


def _audit_failure(deck: Deck, verb: str, arguments: dict, detail: str, reason: str | None) -> None:
    deck.registry.append_audit(verb, arguments, "failed", detail=detail, reason=reason)
