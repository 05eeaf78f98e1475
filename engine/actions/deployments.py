"""Deploy and roll back: plan what changes, then move the target through the gated flow
(engine.targets); the deploy history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.actions.server import start_server
from engine.actions.status_report import local_server_state
from engine.deck import Deck
from engine.registry.records import HistoryEntry
from engine.targets import plans
from engine.targets.plans import DeployPlan, check_target


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


def plan_deploy(deck: Deck, request: DeployRequest) -> DeployPlan:
    return plans.plan_deploy(deck, request.reference, request.target, request.force)


def deploy(deck: Deck, request: DeployRequest) -> DeployResult:
    plan = plan_deploy(deck, request)
    local = request.target == "local"
    start = local and (deck.config.serve.autostart if request.start_server is None
                       else request.start_server)
    history = None
    arguments = {"ref": plan.chosen.ref, "target": request.target, "force": request.force}
    if plan.changes_anything or _pending_on_a_running_server(deck, plan):
        history = plans.move(deck, plan, request.reason, arguments, start)
    elif start:  # already deployed but maybe not served: deploying means serving it
        start_server(deck)  # a start gates a pending deployment; a running server is returned
    return DeployResult(plan, history, local_server_state(deck) if local else None)


def _pending_on_a_running_server(deck: Deck, plan: DeployPlan) -> bool:
    """Local still pending while a server runs (its deploy was killed mid-gate): deploying it
    again runs the gate again, as it would on any other target."""
    return (plan.target == "local" and plan.pending
            and local_server_state(deck)["state"] == "running")


def plan_rollback(deck: Deck, request: RollbackRequest) -> DeployPlan:
    return plans.plan_rollback(deck, request.target, request.to)


def rollback(deck: Deck, request: RollbackRequest) -> DeployResult:
    plan = plan_rollback(deck, request)
    if not plan.changes_anything:
        return DeployResult(plan, None)
    arguments = {"target": request.target, "to": plan.chosen.ref}
    return DeployResult(plan, plans.move(deck, plan, request.reason, arguments))


def history(deck: Deck, target: str | None = None, limit: int = 50) -> list[HistoryEntry]:
    if target is not None:
        check_target(deck, target)
    return deck.registry.history(target, limit)
