"""Running the local server: in the foreground (`modeldeck serve`), detached (deploy, TUI), or in
a thread (tests). All three share LocalServer, so they behave the same.

Run as `python -m engine.serving.process` it is a detached server without extra routes; the
deck's real entry point (engine.targets.local) passes the receiving routes in from above.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ServeSettings
from engine.deck import Deck
from engine.errors import ActionFailed, BadInput, DeckError
from engine.paths import DeckPaths
from engine.runstate import (ServerInfo, TokenFile, api_key_matches, clear_server_info,
                                     exposure_warnings, hash_api_key, running_server, start_lock,
                                     write_server_info)

API_KEY_ENV = "MODELDECK_API_KEY"
LOG_FILE = "server.log"
# deck -> build_app's extra_routes (engine.targets.local passes the receiver's)
RoutesFor = Callable[[Deck], Any]


@dataclass(frozen=True)
class ServeOptions:
    """Command-line overrides of deck.toml's [serve] section (None: keep the setting)."""

    host: str | None = None
    port: int | None = None
    device: str | None = None
    dtype: str | None = None
    max_batch_size: int | None = None
    max_queue: int | None = None
    api_key: str | None = field(default=None, repr=False)  # a secret: never in a repr or log

    def apply(self, settings: ServeSettings) -> ServeSettings:
        """deck.toml's settings with these overrides, validated as deck.toml is (model_copy
        would skip validation: --max-batch-size 0 once started a server that hung every
        request). BadInput names the flag."""
        from pydantic import ValidationError

        overrides = self.overrides()
        try:
            return ServeSettings.model_validate({**settings.model_dump(exclude_unset=True),
                                                 **overrides})
        except ValidationError as error:
            first = error.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else ""
            if name in overrides:
                raise BadInput(f"--{name.replace('_', '-')} {overrides[name]}: "
                               f"{_lowered(first['msg'])}") from None
            raise BadInput(f"[serve] {name}: {_lowered(first['msg'])}") from None

    def overrides(self) -> dict[str, object]:
        return {name: value for name, value in vars(self).items()
                if value is not None and name != "api_key"}


def _lowered(message: str) -> str:
    message = message.removeprefix("Value error, ")  # pydantic's prefix for a validator's text
    return message[:1].lower() + message[1:]


def resolve_settings(deck: Deck, options: ServeOptions) -> ServeSettings:
    """Everything a server start checks before it writes a byte under the deck home: the merged
    settings and the device (cuda on a machine without CUDA is refused here, not after start)."""
    from engine.validate import parse_device

    settings = options.apply(deck.config.serve)
    parse_device(settings.device)
    return settings


def api_key_for(settings: ServeSettings, options: ServeOptions) -> str | None:
    """--api-key, else $MODELDECK_API_KEY, else deck.toml's api_key_env / api_key_file."""
    return options.api_key or os.environ.get(API_KEY_ENV) or settings.resolve_secret()


class LocalServer:
    def __init__(self, deck: Deck, options: ServeOptions = ServeOptions(),
                 extra_routes: Any = None) -> None:
        import uvicorn

        from engine.serving.app import build_app
        from engine.serving.http import uvicorn_config
        from engine.serving.host import ModelHost
        from engine.serving.metrics import ServerMetrics

        self.settings = resolve_settings(deck, options)  # BadInput before anything is written
        self.api_key = api_key_for(self.settings, options)
        self.paths = deck.paths.ensure()
        self.host = ModelHost(self.paths, self.settings, ServerMetrics(deck.config.slo))
        self.socket = _bind(self.settings.host, self.settings.port)
        self.port = self.socket.getsockname()[1]
        self.url = f"http://{_url_host(self.settings.host)}:{self.port}"
        # The deck's one token, read from its file on each control request (rotation, no restart)
        app = build_app(self.host, TokenFile(self.paths).current, self.api_key,
                        on_stop=self.request_stop, extra_routes=extra_routes)
        self.server = uvicorn.Server(uvicorn_config(app, self.settings))
        self.deck = deck
        self.notes: list[str] = []  # what the start did that its caller should hear about
        self.announced = False

    @property
    def warnings(self) -> list[str]:
        return exposure_warnings(self.settings.host, self.port, self.api_key is not None)

    def load_deployed(self) -> str | None:
        """Load what `local` serves: a gated deployment as it is; a pending one (a deploy killed
        mid-gate, `deploy --no-start`) only after it passes the gate here (engine.serving.deploy);
        a failed one not at all."""
        from engine.serving.deploy import load_at_start
        from engine.serving.rollout import settle_interrupted

        interrupted = settle_interrupted(self.paths)  # the pointer never moved: live serves
        served, self.notes = load_at_start(self.deck, self.host)
        if interrupted is not None:
            self.notes.append(f"rollout of {interrupted.candidate}: {interrupted.message}")
        return served

    def announce(self) -> None:
        """Write server.json: from now on other processes find this server and use it."""
        key_hash = hash_api_key(self.api_key) if self.api_key else None
        write_server_info(self.paths, ServerInfo(os.getpid(), self.settings.host, self.port,
                                                 self.url, time.time(), self.api_key is not None,
                                                 key_hash))
        self.announced = True

    def serve(self) -> None:
        """Blocking: answer requests until stopped (SIGTERM/SIGINT or the stop route)."""
        if not self.announced:
            self.announce()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            clear_server_info(self.paths, os.getpid())
            self.host.close()

    def request_stop(self) -> None:
        self.server.should_exit = True

    def serve_in_thread(self) -> threading.Thread:
        """For tests and embedding: serve from a thread and return once it is listening."""
        thread = threading.Thread(target=self.serve, name="modeldeck-server", daemon=True)
        thread.start()
        while not self.server.started:
            if not thread.is_alive():
                raise ActionFailed("the server thread ended during start-up")
            time.sleep(0.02)
        return thread


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket uvicorn serves on.

    Made with proto=IPPROTO_TCP, not the default 0: accepted sockets copy the listener's proto,
    and asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose proto says TCP.
    With Nagle on, a streamed token written while the response headers were still unacknowledged
    waited for the client's delayed ACK: measured TTFT ~45 ms against ~25 ms of server-side work
    for one client (bench/serve_vs_vllm.py). TCP_NODELAY on the listener too (Linux passes it to
    accepted sockets), whatever asyncio decides."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise BadInput(f"cannot listen on {host}:{port}: {error.strerror}") from None
    listener.listen(128)
    listener.set_inheritable(False)
    return listener


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def start_detached(deck: Deck, options: ServeOptions | None = None, timeout: float = 300.0, *,
                   entry: str = "engine.serving.process") -> ServerInfo:
    """Start `python -m <entry>` in its own session; return once it answers.

    options None (deploy's autostart): any running server will do. Given (`serve --detach`):
    a running server must match its host, port and API key, else BadInput says how it differs;
    silently returning a server without the key the user just asked for would leave /v1 open.
    Concurrent starts converge: the first takes the start lock and starts the server, the others
    wait on the lock and then find it running."""
    requested = options if options is not None else ServeOptions()
    settings = resolve_settings(deck, requested)  # BadInput before anything is written
    api_key = api_key_for(settings, requested)
    existing = running_server(deck.paths)
    if existing is None:
        paths = deck.paths.ensure()
        with start_lock(paths, timeout):
            existing = running_server(paths)
            if existing is None:
                return _spawn(deck, paths, requested, timeout, entry)
    if options is not None:
        refuse_if_different(existing, settings, api_key, options)
    return existing


def start_foreground(deck: Deck, options: ServeOptions, extra_routes: Any = None) -> LocalServer:
    """For `modeldeck serve`: bind, load (gating a pending deployment) and publish server.json
    under the start lock, so a concurrent detached start finds this server instead of racing it."""
    resolve_settings(deck, options)  # BadInput before anything is written
    _refuse_second_server(running_server(deck.paths))
    paths = deck.paths.ensure()
    with start_lock(paths, timeout=300.0):
        _refuse_second_server(running_server(paths))
        server = LocalServer(deck, options, extra_routes)
        server.load_deployed()
        server.announce()
    return server


def _refuse_second_server(existing: ServerInfo | None) -> None:
    if existing is not None:
        raise BadInput(f"a server already runs at {existing.url} (pid {existing.pid}); stop it "
                       "first (`modeldeck serve --stop`) or use that one")


def refuse_if_different(info: ServerInfo, settings: ServeSettings, api_key: str | None,
                        options: ServeOptions) -> None:
    """BadInput naming the first difference between the running server and this request (the
    key is compared through its hash in server.json and never printed)."""
    where = f"a server already runs on {info.host}:{info.port}"
    stop = "stop it first (`modeldeck serve --stop`)"
    if settings.host != info.host:
        raise BadInput(f"{where}, not on {settings.host}; {stop} or "
                       f"{_undo('--host', options.host, 'host')}")
    if settings.port not in (0, info.port):
        raise BadInput(f"{where}, not on port {settings.port}; {stop} or "
                       f"{_undo('--port', options.port, 'port')}")
    matches = api_key_matches(info, api_key)
    if matches is not False:
        return
    if not info.api_key_set:
        how = ("drop --api-key" if options.api_key
               else "unset $MODELDECK_API_KEY" if os.environ.get(API_KEY_ENV)
               else "remove api_key_env / api_key_file from deck.toml's [serve]")
        raise BadInput(f"{where} without an API key; {stop} or {how}")
    if api_key is not None:
        raise BadInput(f"{where} with a different API key; {stop} or pass the key it runs with")
    # It requires a key and this request named none: stricter than asked, so it is used as is.


def _undo(flag: str, given: object, setting: str) -> str:
    return f"drop {flag}" if given is not None else f"change [serve] {setting} in deck.toml"


def _spawn(deck: Deck, paths: DeckPaths, options: ServeOptions, timeout: float,
           entry: str) -> ServerInfo:
    command = [sys.executable, "-m", entry, *_option_args(options)]
    if deck.config_file:
        command += ["--config", str(deck.config_file)]
    environment = {**os.environ, "MODELDECK_HOME": str(paths.home)}
    if options.api_key:
        environment[API_KEY_ENV] = options.api_key  # never on the command line (ps shows it)
    with open(paths.run / LOG_FILE, "ab") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 env=environment, start_new_session=True,
                                 cwd=str(Path(__file__).resolve().parents[2]))
    return _wait_until_answering(paths, child, timeout)


def _option_args(options: ServeOptions) -> list[str]:
    arguments = []
    for name, value in vars(options).items():
        if value is not None and name != "api_key":
            arguments += [f"--{name.replace('_', '-')}", str(value)]
    return arguments


def _wait_until_answering(paths: DeckPaths, child: subprocess.Popen, timeout: float) -> ServerInfo:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            cause = _last_line(paths.run / LOG_FILE)
            raise ActionFailed(f"the local server exited during start-up (code {child.returncode})"
                               f"{': ' + cause if cause else ''}; see {paths.run / LOG_FILE}")
        info = running_server(paths)
        if info is not None and info.pid == child.pid:
            try:
                httpx.get(f"{info.url}/health", timeout=2.0)
                return info
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise ActionFailed(f"the local server did not answer within {timeout:.0f}s; "
                       f"see {paths.run / LOG_FILE}")


def _last_line(log: Path, tail_bytes: int = 4096) -> str:
    """The last line the server wrote: why it exited, when it could say."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - tail_bytes))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return last.removeprefix("modeldeck serve: ")


def main(argv: list[str] | None = None, extra_routes: RoutesFor | None = None) -> int:
    """The detached server; extra_routes(deck): routes to mount beside the serving ones."""
    parser = argparse.ArgumentParser(prog="modeldeck-server")
    parser.add_argument("--config")
    for name in ("host", "device", "dtype"):
        parser.add_argument(f"--{name}")
    for name in ("port", "max-batch-size", "max-queue"):
        parser.add_argument(f"--{name}", type=int)
    args = parser.parse_args(argv)
    options = ServeOptions(args.host, args.port, args.device, args.dtype, args.max_batch_size,
                           args.max_queue)
    deck = Deck(config_file=args.config)
    try:
        server = LocalServer(deck, options, extra_routes(deck) if extra_routes else None)
    except DeckError as error:  # a taken port, a bad setting: one line for whoever started us
        sys.stderr.write(f"modeldeck serve: {error}\n")
        return error.exit_code
    try:
        server.load_deployed()
    except DeckError as error:  # serve nothing rather than die: a deploy can still swap in
        sys.stderr.write(f"modeldeck serve: not serving the deployed version: {error}\n")
    for line in (*server.notes, *server.warnings):
        sys.stderr.write(f"modeldeck serve: {line}\n")
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
