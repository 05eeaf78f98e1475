"""Immutable records the registry hands out; each knows its JSON form."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import BadInput

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelRef:
    """`NAME`, `NAME@VERSION` or `NAME@ALIAS` (a bare NAME means its latest version)."""

    model: str
    selector: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        model, _, selector = text.partition("@")
        if not NAME_PATTERN.match(model):
            raise BadInput(f"invalid model reference {text!r}: expected NAME[@VERSION|@ALIAS]")
        if "@" in text and not selector:
            raise BadInput(f"invalid model reference {text!r}: nothing after '@'")
        return cls(model, selector or None)

    def __str__(self) -> str:
        return f"{self.model}@{self.selector}" if self.selector else self.model


def check_name(kind: str, name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise BadInput(f"invalid {kind} {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
    return name


@dataclass(frozen=True)
class FileEntry:
    name: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: int
    created_at: float
    produced_by: str
    source: str | None
    parent_version: int | None
    kind: str
    weight_format: str
    architecture: str | None
    param_count: int | None
    size_bytes: int
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    files: tuple[FileEntry, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def to_dict(self, with_files: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["ref"] = self.ref
        data["aliases"] = list(self.aliases)
        if not with_files:
            data.pop("files")
        return data

    @classmethod
    def from_row(cls, row: Any, aliases: tuple[str, ...] = (),
                 files: tuple[FileEntry, ...] = ()) -> "VersionInfo":
        return cls(
            model=row["model"], version=row["version"], created_at=row["created_at"],
            produced_by=row["produced_by"], source=row["source"],
            parent_version=row["parent_version"], kind=row["kind"],
            weight_format=row["weight_format"], architecture=row["architecture"],
            param_count=row["param_count"], size_bytes=row["size_bytes"], status=row["status"],
            metrics=json.loads(row["metrics"]), lineage=json.loads(row["lineage"]),
            aliases=aliases, files=files,
        )


@dataclass(frozen=True)
class Deployment:
    target: str
    model: str
    version: int
    state: str
    updated_at: float
    history_id: int

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ref": self.ref}


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    target: str
    at: float
    action: str
    model: str
    version: int
    previous_model: str | None
    previous_version: int | None
    user: str
    reason: str | None
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    user: str
    verb: str
    arguments: dict[str, Any]
    result: str
    detail: str | None
    reason: str | None
    history_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Any) -> "AuditEntry":
        return cls(row["id"], row["at"], row["user"], row["verb"], json.loads(row["arguments"]),
                   row["result"], row["detail"], row["reason"], row["history_id"])
