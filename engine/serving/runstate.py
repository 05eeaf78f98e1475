"""The local server's run-state files under the deck home's run/: server.json (pid, port, url)
and the control token (mode 0600). Light on purpose: the status path and the deploy verb read
these without importing torch.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import ActionFailed
from engine.paths import DeckPaths
from engine.fsutil import write_atomically
from engine.procs import process_alive

SERVER_FILE = "server.json"
TOKEN_FILE = "control.token"
TOKEN_HEADER = "X-Modeldeck-Token"
VERSION_HEADER = "X-Modeldeck-Version"


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    url: str
    started_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_control_token(paths: DeckPaths) -> str:
    """A fresh token, written with mode 0600 before any byte of it lands on disk."""
    paths.run.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path = paths.run / TOKEN_FILE
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token)
    os.replace(temporary, path)
    return token


def read_control_token(paths: DeckPaths) -> str | None:
    try:
        return (paths.run / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def write_server_info(paths: DeckPaths, info: ServerInfo) -> None:
    write_atomically(paths.run / SERVER_FILE, json.dumps(info.to_dict()))


def clear_server_info(paths: DeckPaths, pid: int) -> None:
    """Remove server.json only if it still describes this process (a newer server may own it)."""
    info = read_server_info(paths)
    if info is not None and info.pid == pid:
        (paths.run / SERVER_FILE).unlink(missing_ok=True)


def read_server_info(paths: DeckPaths) -> ServerInfo | None:
    try:
        raw = json.loads((paths.run / SERVER_FILE).read_text())
        return ServerInfo(int(raw["pid"]), str(raw["host"]), int(raw["port"]), str(raw["url"]),
                          float(raw.get("started_at", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_server(paths: DeckPaths) -> ServerInfo | None:
    """The server described by server.json if its process is alive."""
    info = read_server_info(paths)
    return info if info is not None and process_alive(info.pid) else None


def control(paths: DeckPaths, route: str, payload: dict[str, Any] | None = None,
            timeout: float = 600.0) -> dict[str, Any]:
    """POST to the running server's control route with the token; ActionFailed if unreachable."""
    import httpx

    info = running_server(paths)
    token = read_control_token(paths)
    if info is None or token is None:
        raise ActionFailed("the local server is not running")
    try:
        response = httpx.post(f"{info.url}/control/{route}", json=payload or {}, timeout=timeout,
                              headers={TOKEN_HEADER: token})
    except httpx.HTTPError as error:
        raise ActionFailed(f"the local server at {info.url} did not answer: "
                           f"{type(error).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        raise ActionFailed(f"the local server refused {route}: {message or response.status_code}")
    return body


def stop_server(paths: DeckPaths, timeout: float = 30.0) -> ServerInfo | None:
    """Ask the running server to stop (control route, else SIGTERM); wait until it has gone."""
    info = running_server(paths)
    if info is None:
        return None
    try:
        control(paths, "stop", timeout=5.0)
    except ActionFailed:
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_server(paths) is None or not process_alive(info.pid):
            return info
        time.sleep(0.1)
    raise ActionFailed(f"the local server (pid {info.pid}) did not stop within {timeout:.0f}s")
