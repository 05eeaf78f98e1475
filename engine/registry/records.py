"""Immutable records the registry hands out; each knows its JSON form."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import BadInput
from engine.validate import NAME_PATTERN, check_name, parse_int



@dataclass(frozen=True)
class ModelRef:
    """`NAME`, `NAME@VERSION` or `NAME@ALIAS` (a bare NAME means its latest version).

    Checked when built, however it is built: a version is a whole number from 1 to 2**63-1 in
    ASCII digits (normalized, so `tiny@007` is `tiny@7`), an alias is a name; anything else
    ('²', '-1', 0, a 30-digit number) is BadInput, never an OverflowError deep in SQLite.
    """

    model: str
    selector: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not NAME_PATTERN.match(self.model):
            raise BadInput(f"invalid model reference {_shown(self)}: expected NAME[@VERSION|@ALIAS]")
        selector = self.selector
        if selector is None or selector == "latest":
            return
        if isinstance(selector, str) and re.fullmatch(r"[+-]?[0-9]+", selector.strip()):
            number = parse_int(f"version in {_shown(self)}", selector.strip(), minimum=1)
            object.__setattr__(self, "selector", str(number))
        elif not isinstance(selector, str) or not NAME_PATTERN.match(selector):
            raise BadInput(f"invalid model reference {_shown(self)}: after '@' comes a version "
                           "number (1, 2, ...), an alias or 'latest'")

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        if not isinstance(text, str):
            raise BadInput(f"invalid model reference {text!r}: expected NAME[@VERSION|@ALIAS]")
        model, _, selector = text.partition("@")
        if "@" in text and not selector:
            raise BadInput(f"invalid model reference {_shown(text)}: nothing after '@'")
        return cls(model, selector or None)

    @property
    def version_number(self) -> int | None:
        """The version when the selector is a number, else None (an alias or the latest)."""
        return int(self.selector) if self.selector and self.selector.isascii() \
            and self.selector.isdigit() else None

    def __str__(self) -> str:
        return f"{self.model}@{self.selector}" if self.selector else self.model


def _shown(value: object, limit: int = 60) -> str:
    if isinstance(value, ModelRef):
        value = f"{value.model}@{value.selector}" if value.selector is not None else value.model
    text = str(value)
    return repr(text[:limit] + "..." if len(text) > limit else text)


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
