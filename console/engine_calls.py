"""The engine verbs the console offers, called exactly as the headless commands call them.

Each function blocks (SQLite, files, processes): the console runs them in worker threads, each
with its own Deck because SQLite connections must not cross threads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from console.sources import fresh_deck
from engine import actions
from engine.deck import Deck


def plan_deploy(deck: Deck, reference: str, target: str) -> actions.DeployPlan:
    with fresh_deck(deck) as opened:
        return actions.plan_deploy(opened, actions.DeployRequest(reference, target, reason="console"))


def deploy(deck: Deck, reference: str, target: str) -> actions.DeployResult:
    with fresh_deck(deck) as opened:
        return actions.deploy(opened, actions.DeployRequest(reference, target, reason="console"))


def plan_rollback(deck: Deck, target: str) -> actions.DeployPlan:
    with fresh_deck(deck) as opened:
        return actions.plan_rollback(opened, actions.RollbackRequest(target, reason="console"))


def rollback(deck: Deck, target: str) -> actions.DeployResult:
    with fresh_deck(deck) as opened:
        return actions.rollback(opened, actions.RollbackRequest(target, reason="console"))


def finetune_defaults(deck: Deck) -> dict[str, Any]:
    """deck.toml's [finetune] as the verb will read it (the form prefills from it)."""
    with fresh_deck(deck) as opened:
        return actions.finetune_defaults(opened)


def server_state(deck: Deck) -> dict[str, Any]:
    return actions.local_server_state(deck)


def start_server(deck: Deck) -> dict[str, Any]:
    """Detached, with deck.toml's [serve] settings; returns once it answers (seconds: it loads
    the deployed version)."""
    return actions.start_server(deck)


def stop_server(deck: Deck) -> dict[str, Any]:
    return actions.stop_server(deck)


def show_model(deck: Deck, reference: str) -> dict[str, Any]:
    with fresh_deck(deck) as opened:
        return actions.show_model(opened, reference).to_dict()


def call_verb(deck: Deck, verb: str, request_name: str, values: dict[str, Any]) -> Any:
    """Build engine.actions.<request_name> from the values it accepts and call the verb."""
    request_type = getattr(actions, request_name)
    accepted = {field.name for field in dataclasses.fields(request_type)}
    request = request_type(**{key: value for key, value in values.items() if key in accepted})
    with fresh_deck(deck) as opened:
        return getattr(actions, verb)(opened, request)


def describe_result(result: Any) -> str:
    """One line for the events pane: the job it started, or the result's own summary."""
    job = getattr(result, "job", None)
    if job is not None and hasattr(job, "id"):
        return f"job {job.id} {job.state}"
    for attribute in ("describe", "summary"):
        method = getattr(result, attribute, None)
        if callable(method):
            return str(method())
    if hasattr(result, "to_dict"):
        data = result.to_dict()
        keys = ("job_id", "id", "state", "ref", "status")
        return " ".join(f"{key}={data[key]}" for key in keys if key in data) or "done"
    return str(result)


def start_rollout(deck: Deck, reference: str) -> actions.RolloutResult:
    """`modeldeck rollout REF` with deck.toml's [rollout] (the eval gate runs first: seconds)."""
    with fresh_deck(deck) as opened:
        return actions.rollout(opened, actions.RolloutRequest(reference, "local", reason="console"))


def steer_rollout(deck: Deck, verb: str) -> actions.RolloutResult:
    """`modeldeck rollout pause|resume|abort`."""
    run = {"pause": actions.pause_rollout, "resume": actions.resume_rollout,
           "abort": actions.abort_rollout}[verb]
    with fresh_deck(deck) as opened:
        return run(opened)
