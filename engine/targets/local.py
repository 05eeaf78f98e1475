"""The `local` target: the embedded server, driven through the shared gated flow like any other
target (engine.targets.flow), and the server's entry points that mount the receiving routes
(engine.targets.receiver) other decks push versions through.

The server itself (engine.serving) knows nothing of targets: build_app takes extra routes, and
the entry points here are where the receiver is wired in. A server started any other way (the
tests' in-thread server without routes) simply has no /control/blobs or /control/versions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.registry.records import HistoryEntry, VersionInfo
from engine.serving.process import LocalServer, ServeOptions, start_detached, start_foreground
from engine.runstate import ServerInfo, control, running_server
from engine.targets.base import GateCheck, GateReport, TargetHealth

TARGET = "local"
SERVER_MODULE = "engine.targets.local"  # `python -m` this: the detached server with the receiver


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


def deliver_local(deck: Deck, action: str, chosen: VersionInfo, reason: str | None,
                  arguments: dict[str, Any], current: VersionInfo | None,
                  start_server: bool = False) -> HistoryEntry:
    """Move `local` to `chosen`: a gated hot swap when the server runs (or is started here);
    otherwise the pointer moves as pending and the next server start gates it (load_at_start)."""
    from engine.targets.flow import deliver

    if running_server(deck.paths) is None:
        if not start_server:
            return deck.registry.move_pointer(TARGET, chosen, action=action, reason=reason,
                                              arguments=arguments, state="pending")
        start_local_server(deck)  # serves the current deployment (gated first if pending); the
        # swap below gates the new one
    return deliver(deck, action, TARGET, chosen, current, reason, arguments,
                   driver=LocalServerTarget(deck))


# ---- the server with the receiving routes -------------------------------------------------


def receiver_routes(deck: Deck) -> Any:
    """build_app's extra routes: the transfer routes, behind the server's own token check."""
    from engine.targets.receiver import transfer_routes

    return lambda check_token, settings: transfer_routes(deck, check_token, settings)


def local_server(deck: Deck, options: ServeOptions = ServeOptions()) -> LocalServer:
    """A LocalServer that other decks can push to (what every real start path runs)."""
    return LocalServer(deck, options, extra_routes=receiver_routes(deck))


def start_local_server(deck: Deck, options: ServeOptions | None = None) -> ServerInfo:
    """Start the server detached (it outlives the terminal), through this module's main."""
    return start_detached(deck, options, entry=SERVER_MODULE)


def start_local_foreground(deck: Deck, options: ServeOptions) -> LocalServer:
    return start_foreground(deck, options, extra_routes=receiver_routes(deck))


def main(argv: list[str] | None = None) -> int:
    from engine.serving.process import main as serve_main

    return serve_main(argv, extra_routes=receiver_routes)


if __name__ == "__main__":
    sys.exit(main())
