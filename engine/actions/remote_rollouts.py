"""Rollouts on a remote `modeldeck` target: the same rollout, run by the remote server's own
controller through its control API (/control/rollout/{start,status,pause,resume,abort}).

  check (target kind, version, settings, what this deck last deployed there) -> the remote is
  reachable and serves that version -> eval gate, here -> push the candidate (the transfer
  deploy uses) -> start the rollout there -> audit `rollout` started.

The eval gate runs on this deck: the remote's start route takes a verdict, it does not compute
one. Both versions are this deck's own, byte for byte what the remote holds (content-addressed),
so the perplexities are those the remote would measure. The remote ramps on its own; the first
status, pause, resume or abort through this deck that sees the rollout ended records its end
here (history and audit, the target's pointer moved when promoted), as a remote deploy does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.config import RolloutSettings
from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.registry.records import ModelRef, VersionInfo
from engine.validate import parse_int

if TYPE_CHECKING:
    from engine.actions.rollouts import RolloutRequest, RolloutResult
    from engine.targets.remote_deck import RemoteDeckTarget

ENDED = {"promoted": "ok", "failed": "failed", "aborted": "aborted", "interrupted": "interrupted"}


@dataclass(frozen=True)
class RemotePlan:
    driver: "RemoteDeckTarget"
    candidate: VersionInfo
    live: VersionInfo
    settings: RolloutSettings


def remote_driver(deck: Deck, target: str) -> "RemoteDeckTarget":
    """The target's driver; BadInput (nothing written) unless it is a `modeldeck` target."""
    from engine.targets.plans import check_target
    from engine.targets.remote_deck import RemoteDeckTarget

    check_target(deck, target)
    settings = deck.config.target(target)
    if settings is None or settings.kind != "modeldeck":
        kind = settings.kind if settings else "unknown"
        raise BadInput(f"target {target!r} is a {kind} target; rollouts run on the local server "
                       f"or a kind = \"modeldeck\" target (deploy to {target!r} instead)")
    return RemoteDeckTarget(settings, deck.paths)


def plan_remote_rollout(deck: Deck, request: "RolloutRequest") -> RemotePlan:
    """Everything checked before anything is written or sent."""
    from engine.actions.rollouts import rollout_settings

    driver = remote_driver(deck, request.target)
    candidate = deck.registry.resolve(request.reference)
    driver.validate(candidate)
    settings = rollout_settings(deck, request)
    deployment = deck.registry.deployment(request.target)
    if deployment is None or deployment.state != "active":
        raise BadInput(f"this deck has no active deployment on {request.target!r}: deploy a "
                       "version to it first, then roll out the next")
    if deployment.ref == candidate.ref:
        raise BadInput(f"{candidate.ref} is already deployed to {request.target}")
    return RemotePlan(driver, candidate, deck.registry.resolve(deployment.ref), settings)


def remote_rollout(deck: Deck, request: "RolloutRequest") -> "RolloutResult":
    from engine.actions.rollouts import RolloutResult, eval_gate, gate_or_hold
    from engine.targets.flow import target_lock

    plan = plan_remote_rollout(deck, request)
    with target_lock(deck.paths, request.target):  # not while a deploy moves the target
        _check_serving(plan, request.target)
        evaluation = eval_gate(deck, plan.candidate, plan.live, plan.settings)
        gate_or_hold(deck, request, plan.candidate, plan.live, evaluation)
        remote_ref = plan.driver.push(plan.candidate, deck.registry.materialize(plan.candidate))
        reference = ModelRef.parse(remote_ref)
        answer = plan.driver.rollout("start", {
            "model": reference.model,
            "version": parse_int(f"{request.target} answered ref", reference.selector or "", 1),
            "settings": plan.settings.model_dump(mode="json"), "eval": evaluation})
        if not answer.get("started"):
            gate = answer.get("gate") or {}
            raise ActionFailed(f"{plan.candidate.ref} did not load on {request.target!r}: "
                               f"{gate.get('reason', 'refused')}; nothing changed")
        state = answer.get("rollout") or {}
        deck.registry.append_audit("rollout", _arguments(plan.candidate.ref, request.target,
                                                         remote_ref, state, plan.live.ref),
                                   "started", reason=request.reason)
    return RolloutResult(state, evaluation)


def _check_serving(plan: RemotePlan, target: str) -> None:
    """The remote must serve what this deck last deployed there, or the eval gate would judge
    the candidate against a version the remote does not serve."""
    health = plan.driver.check()
    if not health.reachable:
        raise ActionFailed(f"target {target!r} cannot be reached: {health.detail}; nothing changed")
    expected = plan.driver.ref_on_remote(plan.live)
    serving = health.extra.get("serving")
    if serving != expected:
        raise ActionFailed(f"target {target!r} serves {serving or 'nothing'}, not {plan.live.ref} "
                           f"(its {expected}) as this deck last deployed; deploy to it first")


def remote_command(deck: Deck, target: str, verb: str) -> "RolloutResult":
    """status, pause, resume or abort on the remote server; a rollout this deck started that
    has ended is recorded here once."""
    from engine.actions.rollouts import RolloutResult

    state = remote_driver(deck, target).rollout(verb).get("rollout")
    if isinstance(state, dict) and state.get("status") in ENDED:
        _record_end(deck, target, state)
    return RolloutResult(state)


def _record_end(deck: Deck, target: str, state: dict[str, Any]) -> None:
    entries = [entry for entry in deck.registry.audit(limit=500, verb="rollout")
               if entry.arguments.get("target") == target
               and entry.arguments.get("rollout_id") == state.get("id")]
    started = next((entry for entry in entries if entry.result == "started"), None)
    if started is None or len(entries) > 1:  # not started from this deck, or recorded already
        return
    arguments = started.arguments
    outcome = ENDED[state["status"]]
    detail = json.dumps({key: state.get(key) for key in ("steps", "failed_gate", "shadow_stats",
                                                         "eval")})
    deck.registry.record_rollout(target, deck.registry.resolve(arguments["ref"]), outcome=outcome,
                                 reason=str(state.get("message") or state["status"]),
                                 arguments=arguments, detail=detail, move=outcome == "ok")


def _arguments(ref: str, target: str, remote_ref: str, state: dict[str, Any],
               live: str) -> dict[str, Any]:
    return {"ref": ref, "target": target, "remote_ref": remote_ref,
            "rollout_id": state.get("id"), "live": live}
