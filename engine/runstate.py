"""The local server's run-state files under the deck home's run/: server.json (pid, port, url,
whether /v1 needs a key) and the control token (mode 0600). Light on purpose: the status path and
the deploy verb read these without importing torch.

The control token is one per deck: created once, reused by every server start, replaced only by
`modeldeck serve --rotate-token`. A remote deck's target reads it (api_key_file = ".../run/
control.token"), so a restart must not change it. The server reads the file (TokenFile) instead
of keeping its own copy, so a rotation takes effect on the next control request.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import ActionFailed
from engine.paths import DeckPaths
from engine.fsutil import write_atomically
from engine.procs import process_alive

SERVER_FILE = "server.json"
ENGINE_FILE = "engine.json"  # the active version's model step: which path, device, dtype, threads
TOKEN_FILE = "control.token"
TOKEN_HEADER = "X-Modeldeck-Token"
VERSION_HEADER = "X-Modeldeck-Version"
START_LOCK = "server-start.lock"
KEY_HASH_ROUNDS = 100_000  # pbkdf2: server.json says which key runs without making it cheap to guess


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    url: str
    started_at: float
    api_key_set: bool = False  # whether /v1 needs an API key
    # "pbkdf2-sha256$<salt hex>$<digest hex>" of the key, so a new start request can be compared
    # with the running server; never the key, and never shown (to_dict leaves it out).
    api_key_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("api_key_hash")
        return data

    @property
    def warnings(self) -> list[str]:
        return exposure_warnings(self.host, self.port, self.api_key_set)


def exposure_warnings(host: str, port: int, api_key_set: bool) -> list[str]:
    """A server other machines can reach, with /v1 open to anyone who reaches it."""
    if api_key_set or is_loopback(host):
        return []
    return [f"the local server listens on {host}:{port} (reachable from other machines) without "
            "an API key; anyone who reaches it can use /v1 (set --api-key or [serve] api_key_env)"]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def hash_api_key(key: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, KEY_HASH_ROUNDS)
    return f"pbkdf2-sha256${salt.hex()}${digest.hex()}"


def api_key_matches(info: ServerInfo, key: str | None) -> bool | None:
    """Whether `key` (None: no key) is what the running server requires; None: cannot tell (a
    server.json written before keys were recorded)."""
    if not info.api_key_set or key is None:
        return info.api_key_set == (key is not None)
    try:
        scheme, salt, _ = (info.api_key_hash or "").split("$")
        salt_bytes = bytes.fromhex(salt)
    except ValueError:
        return None
    if scheme != "pbkdf2-sha256":
        return None
    return hmac.compare_digest(hash_api_key(key, salt_bytes), info.api_key_hash or "")


# ---- the control token ------------------------------------------------------------------------


def control_token(paths: DeckPaths) -> str:
    """The deck's token: the one on disk, else a new one, created once (mode 0600 from the first
    byte; two servers starting at once end up with the same one)."""
    existing = read_control_token(paths)
    if existing is not None:
        _keep_private(paths.run / TOKEN_FILE)
        return existing
    temporary = _write_new_token(paths)
    try:
        os.link(temporary, paths.run / TOKEN_FILE)  # fails if another process created it first
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    token = read_control_token(paths)
    if token is None:
        raise ActionFailed(f"cannot read the control token {paths.run / TOKEN_FILE}")
    return token


def rotate_control_token(paths: DeckPaths) -> None:
    """Replace the token in one rename: old readers see the old one or the new one, whole."""
    os.replace(_write_new_token(paths), paths.run / TOKEN_FILE)


def _write_new_token(paths: DeckPaths) -> Path:
    paths.run.mkdir(parents=True, exist_ok=True)
    temporary = paths.run / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
        handle.flush()
        os.fsync(handle.fileno())
    return temporary


def _keep_private(path: Path) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


def read_control_token(paths: DeckPaths) -> str | None:
    try:
        return (paths.run / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


class TokenFile:
    """What the server checks control requests against: the token file as it is now, re-read
    only when the file changed (a rotation replaces it), so a rotation needs no restart."""

    def __init__(self, paths: DeckPaths) -> None:
        self.paths = paths
        self._seen: tuple[int, int, int] | None = None
        self._token: str | None = control_token(paths)

    def current(self) -> str | None:
        try:
            info = (self.paths.run / TOKEN_FILE).stat()
        except OSError:
            return None  # removed: nobody can use the control routes until a start makes one
        signature = (info.st_ino, info.st_mtime_ns, info.st_size)
        if signature != self._seen:
            self._token, self._seen = read_control_token(self.paths), signature
        return self._token


# ---- the start lock ---------------------------------------------------------------------------


@contextmanager
def run_lock(paths: DeckPaths, name: str, wait_s: float = 0.0) -> Iterator[bool]:
    """An exclusive lock file under run/locks/ (fcntl.flock: released when its process dies),
    shared by every process of this deck. Yields True once held; after `wait_s` seconds of
    waiting (0: none), yields False instead. The one lock mechanism of the run directory."""
    lock_dir = paths.run / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / name, "w") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_held(paths: DeckPaths, name: str) -> bool:
    """Whether another process holds run/locks/NAME now (probed without waiting, never created:
    a read-only deck can be asked)."""
    try:
        handle = open(paths.run / "locks" / name, "a")
    except OSError:
        return False  # no lock file: nobody ever took it here
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextmanager
def start_lock(paths: DeckPaths, timeout: float) -> Iterator[None]:
    """One server start per deck at a time (across processes): the others wait here, then find
    the server the first one started."""
    with run_lock(paths, START_LOCK, wait_s=timeout) as held:
        if not held:
            raise ActionFailed(f"another start of the local server has been in progress "
                               f"for over {timeout:.0f}s; see {paths.run / 'server.log'}")
        yield


# ---- server.json ------------------------------------------------------------------------------


def write_server_info(paths: DeckPaths, info: ServerInfo) -> None:
    write_atomically(paths.run / SERVER_FILE, json.dumps(asdict(info)))


def clear_server_info(paths: DeckPaths, pid: int) -> None:
    """Remove server.json only if it still describes this process (a newer server may own it)."""
    info = read_server_info(paths)
    if info is not None and info.pid == pid:
        (paths.run / SERVER_FILE).unlink(missing_ok=True)


def read_server_info(paths: DeckPaths) -> ServerInfo | None:
    try:
        raw = json.loads((paths.run / SERVER_FILE).read_text())
        key_hash = raw.get("api_key_hash")
        return ServerInfo(int(raw["pid"]), str(raw["host"]), int(raw["port"]), str(raw["url"]),
                          float(raw.get("started_at", 0)), bool(raw.get("api_key_set", False)),
                          str(key_hash) if key_hash else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_engine_info(paths: DeckPaths, pid: int, engine: dict[str, Any]) -> None:
    """What computes the active version (its model step, device, dtype, torch threads): the
    server rewrites it on every switch so `status` can say so without asking the server."""
    write_atomically(paths.run / ENGINE_FILE, json.dumps({"pid": pid, **engine}))


def read_engine_info(paths: DeckPaths, pid: int) -> dict[str, Any] | None:
    """engine.json when it belongs to server process `pid` (an older server's file is not it)."""
    try:
        raw = json.loads((paths.run / ENGINE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.pop("pid", None) != pid:
        return None
    return {str(key): value for key, value in raw.items() if isinstance(value, (str, int, float))}


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
