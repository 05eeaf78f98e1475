"""Deploy and roll back on the `local` target without dropping a request.

The embedded server is one more target driver for the shared flow (engine.targets.flow): the
registry records the move as pending, the server loads the new version beside the old one and
gates it (engine.serving.host) before switching, and the move is settled: active when the gate
passed; otherwise failed, with an automatic rollback recorded and the audit saying why, while
the server keeps serving the old version. When no server runs, the pointer simply moves and the
server loads that version when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.registry.records import HistoryEntry, VersionInfo
from engine.serving.runstate import control, running_server
from engine.targets.base import GateCheck, GateReport, TargetHealth

if TYPE_CHECKING:
    from engine.actions import DeployPlan

TARGET = "local"


class LocalServerTarget:
    """The running embedded server: apply() is its gated hot swap, so gate() reads that outcome."""

    needs_files = False  # the server materializes and hash-checks the version itself

    def __init__(self, deck: Deck) -> None:
        self.deck = deck
        self.outcome: dict[str, Any] = {}

    def check(self) -> TargetHealth:
        info = running_server(self.deck.paths)
        return TargetHealth(TARGET, "local", info is not None,
                            f"server at {info.url}" if info else "server not running")

    def validate(self, version: VersionInfo) -> None:
        if version.kind != "model":
            raise BadInput(f"{version.ref} is a {version.kind}; the local server serves full models")

    def apply(self, version: VersionInfo, files: Path | None, *, rollback: bool) -> None:
        try:
            self.outcome = control(self.deck.paths, "deploy",
                                   {"model": version.model, "version": version.version})
        except ActionFailed as error:
            self.outcome = {"passed": False, "reason": str(error), "checks": []}

    def gate(self, version: VersionInfo) -> GateReport:
        checks = tuple(GateCheck(str(check.get("probe")), bool(check.get("ok")), None,
                                 check.get("latency_s"), str(check.get("detail") or ""))
                       for check in self.outcome.get("checks", ()))
        passed = bool(self.outcome.get("passed"))
        if not passed and all(check.ok for check in checks):  # the swap failed before gating
            checks += (GateCheck("load", False, detail=str(self.outcome.get("reason", "failed"))),)
        return GateReport(passed, checks)

    def commit(self, version: VersionInfo, previous: VersionInfo | None) -> None:
        """The server retires the old version itself once its requests finish."""

    def revert(self, version: VersionInfo, previous: VersionInfo, previous_files: Path | None) -> None:
        """Nothing to undo: a version that fails its gate never takes traffic."""


def deliver_local(deck: Deck, plan: "DeployPlan", reason: str | None, arguments: dict[str, Any],
                  current: VersionInfo | None, start_server: bool = False) -> HistoryEntry:
    from engine.targets.flow import deliver

    if running_server(deck.paths) is None:
        if not start_server:
            return deck.registry.move_pointer(TARGET, plan.chosen, action=plan.action,
                                              reason=reason, arguments=arguments)
        from engine.serving.process import start_detached

        start_detached(deck)  # serves the current deployment; the swap below gates the new one
    return deliver(deck, plan.action, TARGET, plan.chosen, current, reason, arguments,
                   driver=LocalServerTarget(deck))
