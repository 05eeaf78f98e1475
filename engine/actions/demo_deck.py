"""The demo: an offline model in an empty deck, deployed to `local`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.actions.deployments import DeployRequest, deploy
from engine.actions.registry import ImportRequest, import_model
from engine.deck import Deck
from engine.registry.records import VersionInfo


@dataclass(frozen=True)
class DemoResult:
    created: bool
    source: str
    version: VersionInfo | None

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "source": self.source,
                "version": self.version.to_dict() if self.version else None}


def demo(deck: Deck) -> DemoResult:
    """Fill an empty deck with a model that works offline, and deploy it to `local`."""
    from engine import demo as demo_models

    if deck.registry.model_names():
        return DemoResult(False, "existing deck", None)
    source_path, name, origin = demo_models.offline_demo_source(deck.paths)
    version = import_model(deck, ImportRequest(source_path, name, reason="demo"))
    # The pointer only: a demo must not leave a server running behind the user's back
    # (the console's `s` key or `modeldeck serve` starts it).
    deploy(deck, DeployRequest(version.ref, "local", reason="demo", start_server=False))
    return DemoResult(True, origin, deck.registry.resolve(version.ref))
