"""Deploy and roll back on the `local` target without dropping a request.

When the embedded server is running, the registry records the move as pending, the server
loads the new version beside the old one and gates it (engine.serving.host), and the move is
settled: active when the gate passed; otherwise failed, with an automatic rollback recorded and
the audit saying why, while the server keeps serving the old version. When no server runs, the
pointer simply moves and the server loads it when it starts.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engine.deck import Deck
from engine.errors import ActionFailed
from engine.registry.records import HistoryEntry, VersionInfo
from engine.serving.runstate import control, running_server

if TYPE_CHECKING:
    from engine.actions import DeployPlan

TARGET = "local"


def deliver_local(deck: Deck, plan: "DeployPlan", reason: str | None, arguments: dict[str, Any],
                  start_server: bool = False) -> HistoryEntry:
    from engine.targets.flow import target_lock

    if running_server(deck.paths) is None:
        if not start_server:
            return deck.registry.move_pointer(TARGET, plan.chosen, action=plan.action,
                                              reason=reason, arguments=arguments)
        from engine.serving.process import start_detached

        start_detached(deck)  # serves the current deployment; the swap below gates the new one
    with target_lock(deck.paths, TARGET):
        entry = deck.registry.move_pointer(TARGET, plan.chosen, action=plan.action, reason=reason,
                                           arguments=arguments, state="pending")
        outcome = _swap(deck, plan.chosen)
        if outcome.get("passed"):
            deck.registry.set_outcome(TARGET, entry.id, "ok", "active")
            return deck.registry.history_entry(entry.id)  # type: ignore[return-value]
        _settle_failure(deck, plan, entry, outcome, arguments)
    raise AssertionError("unreachable")


def _swap(deck: Deck, chosen: VersionInfo) -> dict[str, Any]:
    try:
        return control(deck.paths, "deploy", {"model": chosen.model, "version": chosen.version})
    except ActionFailed as error:
        return {"passed": False, "reason": str(error), "checks": [], "serving": None}


def _settle_failure(deck: Deck, plan: "DeployPlan", entry: HistoryEntry, outcome: dict[str, Any],
                    arguments: dict[str, Any]) -> None:
    why = str(outcome.get("reason") or "gate failed")
    deck.registry.set_outcome(TARGET, entry.id, "failed", "failed")
    detail = json.dumps(outcome, default=str)
    previous = plan.current
    if previous is None:
        deck.registry.append_audit(plan.action, arguments, "failed", detail=detail, reason=why)
        raise ActionFailed(f"{plan.chosen.ref} on 'local': {why}; nothing was served before")
    previous_version = deck.registry.resolve(previous.ref)
    deck.registry.move_pointer(TARGET, previous_version, action="auto-rollback", reason=why,
                               arguments={"target": TARGET, "from": plan.chosen.ref,
                                          "to": previous_version.ref})
    deck.registry.append_audit(plan.action, arguments, "failed", detail=detail, reason=why)
    serving = outcome.get("serving") or "nothing"
    raise ActionFailed(f"{plan.chosen.ref} on 'local': {why}; rolled back to {previous_version.ref} "
                       f"(the server still serves {serving})")
