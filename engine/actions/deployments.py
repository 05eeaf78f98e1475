"""Deploy and roll back: plan what changes, then move the target through the gated flow
(engine.targets); the deploy history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.actions.server import start_server
from engine.actions.status_report import local_server_state
from engine.deck import Deck
from engine.errors import BadInput
from engine.registry.records import Deployment, HistoryEntry, ModelRef, VersionInfo


@dataclass(frozen=True)
class DeployRequest:
    reference: str
    target: str = "local"
    reason: str | None = None
    force: bool = False
    # local target: start the embedded server when none runs (None: deck.toml's [serve] autostart)
    start_server: bool | None = None


@dataclass(frozen=True)
class RollbackRequest:
    target: str = "local"
    to: str | None = None
    reason: str | None = None


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

    def describe(self) -> str:
        before = self.current.ref if self.current else "nothing"
        return f"{self.action} {self.target}: {before} -> {self.chosen.ref}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target,
                "current": self.current.to_dict() if self.current else None,
                "chosen": self.chosen.to_dict(), "changes_anything": self.changes_anything}


@dataclass(frozen=True)
class DeployResult:
    plan: DeployPlan
    history: HistoryEntry | None  # None when nothing changed
    server: dict[str, Any] | None = None  # the local server afterwards (local target only)

    @property
    def changed(self) -> bool:
        return self.history is not None

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "changed": self.changed,
                "history": self.history.to_dict() if self.history else None, "server": self.server}


def check_target(deck: Deck, target: str) -> None:
    if target not in deck.config.target_names:
        known = ", ".join(deck.config.target_names)
        raise BadInput(f"unknown target {target!r} (known: {known})")


def plan_deploy(deck: Deck, request: DeployRequest) -> DeployPlan:
    check_target(deck, request.target)
    chosen = deck.registry.resolve(request.reference)
    if chosen.status == "rejected" and not request.force:
        raise BadInput(f"{chosen.ref} was rejected by its evaluation; pass --force to deploy it anyway")
    settings = deck.config.target(request.target)
    if settings is not None:  # refuse what the target kind cannot serve before asking to confirm
        from engine.targets.flow import driver_for

        driver_for(settings).validate(chosen)
    return DeployPlan("deploy", request.target, deck.registry.deployment(request.target), chosen)


def deploy(deck: Deck, request: DeployRequest) -> DeployResult:
    plan = plan_deploy(deck, request)
    local = request.target == "local"
    start = local and (deck.config.serve.autostart if request.start_server is None
                       else request.start_server)
    history = None
    arguments = {"ref": plan.chosen.ref, "target": request.target, "force": request.force}
    if plan.changes_anything or _pending_on_a_running_server(deck, plan):
        history = _move(deck, plan, request.reason, arguments, start)
    elif start:  # already deployed but maybe not served: deploying means serving it
        start_server(deck)  # a start gates a pending deployment; a running server is returned
    return DeployResult(plan, history, local_server_state(deck) if local else None)


def _pending_on_a_running_server(deck: Deck, plan: DeployPlan) -> bool:
    """Local still pending while a server runs (its deploy was killed mid-gate): deploying it
    again runs the gate again, as it would on any other target."""
    return (plan.target == "local" and plan.current is not None
            and plan.current.state == "pending" and local_server_state(deck)["state"] == "running")


def plan_rollback(deck: Deck, request: RollbackRequest) -> DeployPlan:
    check_target(deck, request.target)
    current = deck.registry.deployment(request.target)
    if current is None:
        raise BadInput(f"target {request.target!r} has no deployment to roll back")
    if request.to is not None:
        chosen = deck.registry.resolve(_rollback_reference(current, request.to))
    else:
        chosen = _previous_version(deck, current)
    return DeployPlan("rollback", request.target, current, chosen)


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


def rollback(deck: Deck, request: RollbackRequest) -> DeployResult:
    plan = plan_rollback(deck, request)
    if not plan.changes_anything:
        return DeployResult(plan, None)
    arguments = {"target": request.target, "to": plan.chosen.ref}
    return DeployResult(plan, _move(deck, plan, request.reason, arguments))


def _last_good(deck: Deck, target: str) -> VersionInfo | None:
    """What the target last served successfully: the version a failed deploy returns to."""
    entries = deck.registry.history(target, limit=1000)
    good = next((entry for entry in entries if entry.outcome == "ok"), None)
    return deck.registry.resolve(ModelRef(good.model, str(good.version))) if good else None


def _move(deck: Deck, plan: DeployPlan, reason: str | None, arguments: dict[str, Any],
          start_server: bool = False) -> HistoryEntry:
    """Point the target at plan.chosen through the shared, gated flow (engine.targets.flow)."""
    current = _last_good(deck, plan.target)
    if plan.target == "local":
        from engine.serving.deploy import deliver_local  # gated hot swap when the server runs

        return deliver_local(deck, plan, reason, arguments, current, start_server)
    from engine.targets.flow import deliver

    return deliver(deck, plan.action, plan.target, plan.chosen, current, reason, arguments)


def history(deck: Deck, target: str | None = None, limit: int = 50) -> list[HistoryEntry]:
    if target is not None:
        check_target(deck, target)
    return deck.registry.history(target, limit)
