"""What a deploy or rollback will change (the plan shown before the user confirms), and moving a
target to the plan's version through the gated flow. The verbs (engine.actions) and the receiving
side of a remote deck (engine.targets.receiver) both deploy through here: one way to deploy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.deck import Deck
from engine.errors import BadInput
from engine.registry.records import Deployment, HistoryEntry, ModelRef, VersionInfo


@dataclass(frozen=True)
class DeployPlan:
    """What a deploy or rollback will change: shown before the user confirms."""

    action: str
    target: str
    current: Deployment | None
    chosen: VersionInfo

    @property
    def changes_anything(self) -> bool:
        """False when the target already points at the chosen version: active, or pending
        (local, moved while no server ran: the next server start gates it)."""
        settled = ("active", "pending") if self.target == "local" else ("active",)
        return not (self.current and self.current.state in settled
                    and (self.current.model, self.current.version)
                    == (self.chosen.model, self.chosen.version))

    @property
    def pending(self) -> bool:
        return self.current is not None and self.current.state == "pending"

    def describe(self) -> str:
        before = self.current.ref if self.current else "nothing"
        return f"{self.action} {self.target}: {before} -> {self.chosen.ref}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target,
                "current": self.current.to_dict() if self.current else None,
                "chosen": self.chosen.to_dict(), "changes_anything": self.changes_anything}


def check_target(deck: Deck, target: str) -> None:
    if target not in deck.config.target_names:
        known = ", ".join(deck.config.target_names)
        raise BadInput(f"unknown target {target!r} (known: {known})")


def plan_deploy(deck: Deck, reference: str, target: str, force: bool = False) -> DeployPlan:
    check_target(deck, target)
    chosen = deck.registry.resolve(reference)
    if chosen.status == "rejected" and not force:
        raise BadInput(f"{chosen.ref} was rejected by its evaluation; pass --force to deploy it anyway")
    settings = deck.config.target(target)
    if settings is not None:  # refuse what the target kind cannot serve before asking to confirm
        from engine.targets.flow import driver_for

        driver_for(settings).validate(chosen)
    return DeployPlan("deploy", target, deck.registry.deployment(target), chosen)


def plan_rollback(deck: Deck, target: str, to: str | None = None) -> DeployPlan:
    check_target(deck, target)
    current = deck.registry.deployment(target)
    if current is None:
        raise BadInput(f"target {target!r} has no deployment to roll back")
    if to is not None:
        chosen = deck.registry.resolve(_rollback_reference(current, to))
    else:
        chosen = _previous_version(deck, current)
    return DeployPlan("rollback", target, current, chosen)


def _rollback_reference(current: Deployment, to: str) -> ModelRef:
    """--to VERSION, ALIAS or MODEL@VERSION, always a version of the model the target serves:
    rolling back to another model is a deploy, and must say so (BadInput otherwise)."""
    if "@" in to:
        reference = ModelRef.parse(to)
        if reference.model != current.model:
            raise BadInput(f"--to {reference} is not a version of {current.model}, which "
                           f"{current.target!r} serves; rollback returns to an earlier version of "
                           f"the same model (to switch models, `modeldeck deploy {reference}`)")
        return reference
    if not to.strip():
        raise BadInput("--to needs a version number or an alias")
    return ModelRef(current.model, to.strip())


def _previous_version(deck: Deck, current: Deployment) -> VersionInfo:
    """What served before the current deployment (so two rollbacks toggle, like kubectl)."""
    entry = deck.registry.history_entry(current.history_id)
    if entry is None or entry.previous_model is None or entry.previous_version is None:
        raise BadInput(f"target {current.target!r} has no earlier deployment to roll back to")
    return deck.registry.resolve(ModelRef(entry.previous_model, str(entry.previous_version)))


def last_good(deck: Deck, target: str) -> VersionInfo | None:
    """What the target last served successfully: the version a failed deploy returns to."""
    entries = deck.registry.history(target, limit=1000)
    good = next((entry for entry in entries if entry.outcome == "ok"), None)
    return deck.registry.resolve(ModelRef(good.model, str(good.version))) if good else None


def move(deck: Deck, plan: DeployPlan, reason: str | None, arguments: dict[str, Any],
         start_server: bool = False) -> HistoryEntry:
    """Point the target at plan.chosen through the shared, gated flow (engine.targets.flow)."""
    current = last_good(deck, plan.target)
    if plan.target == "local":
        from engine.targets.local import deliver_local  # gated hot swap when the server runs

        return deliver_local(deck, plan.action, plan.chosen, reason, arguments, current,
                             start_server)
    from engine.targets.flow import deliver

    return deliver(deck, plan.action, plan.target, plan.chosen, current, reason, arguments)
