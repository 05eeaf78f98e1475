"""The driver interface every target kind implements, and what a gate reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.registry.records import VersionInfo


@dataclass(frozen=True)
class GateCheck:
    """One probe of the gate: a prompt or a health URL, and what came back."""

    probe: str
    ok: bool
    status_code: int | None = None
    latency_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class GateReport:
    passed: bool
    checks: tuple[GateCheck, ...] = ()

    @property
    def reason(self) -> str:
        failed = next((check for check in self.checks if not check.ok), None)
        if failed is None:
            return "gate passed"
        code = f" status {failed.status_code}" if failed.status_code is not None else ""
        latency = f" after {failed.latency_s:.2f}s" if failed.latency_s is not None else ""
        return f"gate failed on {failed.probe!r}:{code}{latency} {failed.detail}".rstrip()

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason,
                "checks": [asdict(check) for check in self.checks]}


@dataclass(frozen=True)
class TargetHealth:
    name: str
    kind: str
    reachable: bool
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TargetDriver(Protocol):
    """What a target kind does; the flow around it (engine.targets.flow) is shared.

    validate() refuses a version the kind cannot serve (before anything is written),
    apply() makes the target serve a version (raising ActionFailed when it cannot), gate()
    judges it, commit() retires the previous version once the gate passed, and revert() returns
    the target to the previous version after a failed gate.
    """

    needs_files: bool  # whether apply() reads the version's materialized files

    def check(self) -> TargetHealth: ...

    def validate(self, version: VersionInfo) -> None:
        """Raise BadInput when this target cannot serve this version at all."""
        ...

    def apply(self, version: VersionInfo, files: Path | None, *, rollback: bool) -> None: ...

    def gate(self, version: VersionInfo) -> GateReport: ...

    def commit(self, version: VersionInfo, previous: VersionInfo | None) -> None: ...

    def revert(self, version: VersionInfo, previous: VersionInfo,
               previous_files: Path | None) -> None: ...


def needed(files: Path | None) -> Path:
    """The version's files, which the flow always passes to a driver with needs_files = True."""
    if files is None:
        from engine.errors import ActionFailed

        raise ActionFailed("this target needs the version's files, and the deploy gave none")
    return files
