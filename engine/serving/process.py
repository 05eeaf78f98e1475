"""Running the local server: in the foreground (`modeldeck serve`), detached (deploy, TUI), or in
a thread (tests). All three share LocalServer, so they behave the same.

Run as `python -m engine.serving.process` it is the detached server's entry point.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import ServeSettings
from engine.deck import Deck
from engine.errors import ActionFailed, BadInput, DeckError
from engine.paths import DeckPaths
from engine.serving.runstate import (ServerInfo, clear_server_info, new_control_token,
                                     running_server, write_server_info)

API_KEY_ENV = "MODELDECK_API_KEY"
LOG_FILE = "server.log"


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
        overrides = {name: value for name, value in vars(self).items()
                     if value is not None and name != "api_key"}
        return settings.model_copy(update=overrides)


def api_key_for(settings: ServeSettings, options: ServeOptions) -> str | None:
    """--api-key, else $MODELDECK_API_KEY, else deck.toml's api_key_env / api_key_file."""
    return options.api_key or os.environ.get(API_KEY_ENV) or settings.resolve_secret()


class LocalServer:
    def __init__(self, deck: Deck, options: ServeOptions = ServeOptions()) -> None:
        import uvicorn

        from engine.serving.app import build_app
        from engine.serving.http import uvicorn_config
        from engine.serving.host import ModelHost
        from engine.serving.metrics import ServerMetrics

        self.paths = deck.paths.ensure()
        self.settings = options.apply(deck.config.serve)
        self.host = ModelHost(self.paths, self.settings, ServerMetrics())
        self.socket = _bind(self.settings.host, self.settings.port)
        self.port = self.socket.getsockname()[1]
        self.url = f"http://{_url_host(self.settings.host)}:{self.port}"
        app = build_app(self.host, new_control_token(self.paths), api_key_for(self.settings, options),
                        on_stop=self.request_stop, deck=deck)
        self.server = uvicorn.Server(uvicorn_config(app, self.settings))
        self.deck = deck

    def load_deployed(self) -> str | None:
        """Load what the registry says `local` serves (a failed deployment is not served)."""
        deployment = self.deck.registry.deployment("local")
        if deployment is None or deployment.state == "failed":
            return None
        self.host.start_with(self.host.load(deployment.model, deployment.version))
        return deployment.ref

    def serve(self) -> None:
        """Blocking: answer requests until stopped (SIGTERM/SIGINT or the stop route)."""
        write_server_info(self.paths, ServerInfo(os.getpid(), self.settings.host, self.port,
                                                 self.url, time.time()))
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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def start_detached(deck: Deck, options: ServeOptions = ServeOptions(),
                   timeout: float = 300.0) -> ServerInfo:
    """Start `python -m engine.serving.process` in its own session; return once it answers."""
    paths = deck.paths.ensure()
    existing = running_server(paths)
    if existing is not None:
        return existing
    command = [sys.executable, "-m", "engine.serving.process", *_option_args(options)]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.serving.process")
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
        server = LocalServer(deck, options)
    except DeckError as error:  # a taken port, a bad setting: one line for whoever started us
        sys.stderr.write(f"modeldeck serve: {error}\n")
        return error.exit_code
    try:
        server.load_deployed()
    except DeckError as error:  # serve nothing rather than die: a deploy can still swap in
        sys.stderr.write(f"modeldeck serve: not serving the deployed version: {error}\n")
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
