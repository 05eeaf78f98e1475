"""The deploy targets: what each one is, what it serves, and whether it answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from engine.actions.status_report import local_server_state
from engine.deck import Deck
from engine.registry.records import Deployment


@dataclass(frozen=True)
class TargetSummary:
    name: str
    kind: str
    url: str | None
    serving: str | None
    state: str | None
    since: float | None
    secret_configured: bool  # whether a secret source is set; the secret itself is never shown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_targets(deck: Deck) -> list[TargetSummary]:
    deployments = {d.target: d for d in deck.registry.deployments()}
    summaries = [_summary("local", "local", local_server_state(deck).get("url"),
                          deck.config.serve.secret_configured, deployments.get("local"))]
    for target in deck.config.targets:
        summaries.append(_summary(target.name, target.kind, target.url or target.health_url,
                                  target.secret_configured, deployments.get(target.name)))
    return summaries


def _summary(name: str, kind: str, url: str | None, secret: bool,
             deployment: Deployment | None) -> TargetSummary:
    return TargetSummary(name, kind, url, deployment.ref if deployment else None,
                         deployment.state if deployment else None,
                         deployment.updated_at if deployment else None, secret)


def check_targets(deck: Deck) -> list[Any]:
    """Probe every target: the local server's state, and each remote driver's check()."""
    from engine.targets.base import TargetHealth
    from engine.targets.flow import driver_for

    server = local_server_state(deck)
    results = [TargetHealth("local", "local", server["state"] == "running",
                            f"server {server['state']}", {"url": server.get("url")})]
    for target in deck.config.targets:
        results.append(driver_for(target).check())
    return results
