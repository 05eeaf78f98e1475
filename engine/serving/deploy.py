"""What a starting server serves, gating a pending `local` deployment first.

Deploying to `local` goes through the shared flow (engine.targets.local drives the server as one
more target): the registry records the move as pending, the server loads the new version beside
the old one and gates it (engine.serving.host) before switching, and the move is settled.

When no server runs, the pointer moves and stays `pending`: no gate has judged that version yet.
A server serves only gated versions, so its start gates a pending deployment itself
(load_at_start) with the same gate code as a hot swap (engine.serving.host.run_gate) and settles
it through the registry the way the flow would: active, or failed with an auto-rollback to the
last version whose gate passed. Chosen over "serve the last good version and let the verb run a
gated deploy after the start" because every start path (foreground `serve`, `serve --detach`,
deploy's autostart, the console's `s`) goes through here, and the server needs neither the verb
nor the targets layer for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.deck import Deck
from engine.errors import DeckError
from engine.registry.records import Deployment, ModelRef, VersionInfo
from engine.runstate import run_lock

if TYPE_CHECKING:
    from engine.serving.host import GateOutcome, ModelHost

TARGET = "local"


# ---- what a starting server serves --------------------------------------------------------


def load_at_start(deck: Deck, host: "ModelHost") -> tuple[str | None, list[str]]:
    """Load what `local` should serve at start; returns (ref served, notes for the caller)."""
    deployment = deck.registry.deployment(TARGET)
    if deployment is None or deployment.state == "failed":
        return None, []
    if deployment.state == "pending":
        with run_lock(deck.paths, f"{TARGET}.lock") as held:  # the lock a deploy holds
            if held:
                return _gate_pending(deck, host, deployment)
        # A deploy holds the target and will settle this one: serve the last gated version.
        return _serve(host, _last_good(deck)), [f"{deployment.ref} is pending (a deploy is in "
                                                "progress); serving the last gated version"]
    host.start_with(host.load(deployment.model, deployment.version))
    return deployment.ref, []


def _gate_pending(deck: Deck, host: "ModelHost", deployment: Deployment) -> tuple[str | None, list[str]]:
    registry = deck.registry
    outcome, candidate = _load_and_gate(host, deployment)
    entry = registry.history_entry(deployment.history_id)
    arguments = {"target": TARGET, "ref": deployment.ref, "history_id": deployment.history_id,
                 "at": "server start"}
    if outcome.passed and candidate is not None:
        host.start_with(candidate)
        registry.set_outcome(TARGET, deployment.history_id, "ok", "active")
        registry.append_audit("gate", arguments, "ok", detail=json.dumps(outcome.to_dict()),
                              reason="pending deployment gated at server start")
        return deployment.ref, []
    registry.set_outcome(TARGET, deployment.history_id, "failed", "failed")
    good = _last_good(deck)
    if good is not None:
        registry.move_pointer(TARGET, good, action="auto-rollback", reason=outcome.reason,
                              arguments={"target": TARGET, "from": deployment.ref, "to": good.ref})
    registry.append_audit(entry.action if entry else "deploy", arguments, "failed",
                          detail=json.dumps(outcome.to_dict()), reason=outcome.reason)
    note = (f"not serving {deployment.ref}: {outcome.reason}; "
            + (f"rolled back to {good.ref}" if good else "no earlier version passed its gate"))
    return _serve(host, good), [note]


def _load_and_gate(host: "ModelHost", deployment: Deployment) -> tuple["GateOutcome", Any]:
    from engine.serving.host import GateOutcome, run_gate

    try:
        candidate = host.load(deployment.model, deployment.version)
    except (DeckError, OSError, ValueError, RuntimeError) as error:
        return GateOutcome(False, f"load failed: {error}",
                           ({"probe": "load", "ok": False, "detail": str(error)},)), None
    outcome = run_gate(candidate, host.settings.gate)
    if not outcome.passed:
        candidate.retire()
    return outcome, candidate


def _serve(host: "ModelHost", version: VersionInfo | None) -> str | None:
    if version is None:
        return None
    host.start_with(host.load(version.model, version.version))
    return version.ref


def _last_good(deck: Deck) -> VersionInfo | None:
    """The version `local` last served after a passed gate (what a failed one falls back to)."""
    good = next((entry for entry in deck.registry.history(TARGET, limit=1000)
                 if entry.outcome == "ok"), None)
    return deck.registry.resolve(ModelRef(good.model, str(good.version))) if good else None
