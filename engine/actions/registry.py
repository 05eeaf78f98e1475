"""Registry verbs: import a model, list, show and alias its versions, and the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.errors import BadInput
from engine.registry.records import AuditEntry, VersionInfo


@dataclass(frozen=True)
class ImportRequest:
    path: Path
    name: str
    allow_pickle: bool = False
    reason: str | None = None


def import_model(deck: Deck, request: ImportRequest) -> VersionInfo:
    from engine.registry.inspect import describe_source
    from engine.registry.records import check_name

    check_name("model name", request.name)
    source = Path(request.path).expanduser().resolve()
    description = describe_source(source, allow_pickle=request.allow_pickle)
    return deck.registry.register(
        request.name, description, produced_by="import", source=str(source),
        audit_verb="import",
        audit_arguments={"path": str(source), "name": request.name,
                         "allow_pickle": request.allow_pickle})


def list_models(deck: Deck, model: str | None = None) -> list[VersionInfo]:
    if model is not None and model not in deck.registry.model_names():
        raise BadInput(f"model {model!r} does not exist")
    return deck.registry.versions(model)


@dataclass(frozen=True)
class ModelDetails:
    version: VersionInfo
    deployed_on: tuple[str, ...]
    all_versions: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.version.to_dict(with_files=True), "deployed_on": list(self.deployed_on),
                "all_versions": list(self.all_versions)}


def show_model(deck: Deck, reference: str) -> ModelDetails:
    version = deck.registry.resolve(reference)
    deployed_on = tuple(d.target for d in deck.registry.deployments()
                        if (d.model, d.version) == (version.model, version.version))
    numbers = tuple(v.version for v in deck.registry.versions(version.model))
    return ModelDetails(version, deployed_on, numbers)


@dataclass(frozen=True)
class AliasRequest:
    reference: str
    alias: str


def alias_model(deck: Deck, request: AliasRequest) -> VersionInfo:
    version = deck.registry.resolve(request.reference)
    deck.registry.set_alias(version, request.alias)
    return deck.registry.resolve(version.ref)


def audit(deck: Deck, limit: int = 50, verb: str | None = None) -> list[AuditEntry]:
    return deck.registry.audit(limit, verb)
