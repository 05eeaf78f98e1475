"""The local embedded server: serve in this process, start detached, stop, rotate its token."""

from __future__ import annotations

from typing import Any

from engine.deck import Deck
from engine.errors import BadInput


def serve(deck: Deck, options: Any, on_ready: Any = None, on_warning: Any = None) -> None:
    """Serve the version deployed to `local` in this process until stopped (Ctrl-C, --stop).
    options: engine.serving.process.ServeOptions, the overrides of deck.toml's [serve]; on_ready(url,
    version) is called once the port is bound and the version loaded (a pending deployment gated);
    on_warning(text) for what the user must hear (no API key on a public address, a failed gate)."""
    from engine.targets.local import start_local_foreground

    server = start_local_foreground(deck, options)
    if on_warning is not None:
        for line in (*server.notes, *server.warnings):
            on_warning(line)
    if on_ready is not None:
        on_ready(server.url, server.host.active.ref if server.host.active else None)
    server.serve()


def start_server(deck: Deck, options: Any = None) -> dict[str, Any]:
    """Start the server detached (it outlives the terminal) and return its pid, url and warnings.
    options: engine.serving.process.ServeOptions; None: deck.toml's [serve] as it is, and any
    running server will do; given: a running server that differs in host, port or API key is
    refused (BadInput) rather than returned as if it were what was asked for."""
    from engine.targets.local import start_local_server

    info = start_local_server(deck, options)
    return {**info.to_dict(), "warnings": info.warnings}


def stop_server(deck: Deck) -> dict[str, Any]:
    from engine.runstate import stop_server as stop

    stopped = stop(deck.paths)
    return {"stopped": stopped is not None, "pid": stopped.pid if stopped else None}


def rotate_control_token(deck: Deck) -> dict[str, Any]:
    """Replace the deck's control token. A running server reads the token file on each control
    request, so it accepts only the new token from now on, with no restart; copies of the old
    one (a remote deck's api_key_file) must be replaced. The token itself is never returned."""
    from engine.runstate import TOKEN_FILE, rotate_control_token as rotate, running_server

    deck.paths.ensure()
    rotate(deck.paths)
    info = running_server(deck.paths)
    deck.registry.append_audit("rotate-token", {"target": "local"}, "ok")
    return {"rotated": True, "token_file": str(deck.paths.run / TOKEN_FILE),
            "server_running": info is not None, "pid": info.pid if info else None}
