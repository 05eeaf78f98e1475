"""A loopback HTTP server that plays serving endpoints back: `/<name>/health`, `/<name>/v1/models`
and `/<name>/metrics` answer from a per-endpoint script (recorded /metrics bodies in turn, HTTP
statuses, delays, a required API key). Used by the telemetry tests and by bench/poll.py.

Real sockets and real HTTP/1.1 with keep-alive; only the content is canned. It is a small
asyncio protocol rather than http.server: bench/poll.py needs one process to answer 400
requests a tick on a shared 2-core machine, and a thread per connection could not keep up.
It understands what HTTP clients send for a GET (request line, headers, no body).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any


@dataclass
class Script:
    """What one endpoint answers. `bodies` are returned in turn, the last one repeating (or, with
    `cycle`, starting over: a server that keeps working and now and then restarts)."""

    bodies: list[str] = field(default_factory=list)
    health_status: int = 200
    metrics_status: int = 200
    delay_s: float = 0.0
    required_key: str | None = None
    cycle: bool = False
    served: int = 0  # /metrics bodies handed out so far
    slow_finished: threading.Event = field(default_factory=threading.Event)
    seen_authorization: list[str] = field(default_factory=list)

    def next_body(self) -> str:
        if not self.bodies:
            return ""
        index = self.served % len(self.bodies) if self.cycle else min(self.served, len(self.bodies) - 1)
        self.served += 1
        return self.bodies[index]


class _Connection(asyncio.Protocol):
    def __init__(self, scripts: dict[str, Script]) -> None:
        self.scripts = scripts
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.buffer[:1].isalpha():  # not HTTP (a TLS ClientHello): what plain servers do
            self._answer(400, "bad request\n")
            if self.transport is not None:
                self.transport.close()
            return
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self._request(head.decode("latin-1"))

    def _request(self, head: str) -> None:
        request_line, *header_lines = head.split("\r\n")
        path = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        _, name, rest = (path.split("/", 2) + ["", ""])[:3]
        script = self.scripts.get(name)
        if script is None:
            return self._answer(404, "no such endpoint\n")
        script.seen_authorization.append(headers.get("authorization", ""))
        if script.delay_s:
            asyncio.get_running_loop().call_later(script.delay_s, self._late, script, rest, headers)
        else:
            self._respond(script, rest, headers)

    def _late(self, script: Script, rest: str, headers: dict[str, str]) -> None:
        script.slow_finished.set()
        self._respond(script, rest, headers)

    def _respond(self, script: Script, rest: str, headers: dict[str, str]) -> None:
        if script.required_key and headers.get("authorization") != f"Bearer {script.required_key}":
            return self._answer(401, "unauthorized\n")
        if rest in ("health", "v1/models"):
            return self._answer(script.health_status, "{}" if rest == "v1/models" else "")
        if rest == "metrics":
            return self._answer(script.metrics_status, script.next_body())
        return self._answer(404, "not found\n")

    def _answer(self, status: int, body: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the client gave up (its timeout) and closed the connection
        data = body.encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "Content-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        self.transport.write(head + data)


class ReplayServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: Any = None) -> None:
        self.scripts: dict[str, Script] = {}
        self.host, self._port, self.tls = host, port, tls  # tls: an ssl.SSLContext to serve https
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def url(self, name: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{name}"

    def add(self, name: str, script: Script) -> str:
        self.scripts[name] = script
        return self.url(name)

    def _listen(self) -> None:
        self._server = self._loop.run_until_complete(self._loop.create_server(
            lambda: _Connection(self.scripts), self.host, self._port, backlog=1024, ssl=self.tls))

    def start(self) -> "ReplayServer":
        """Serve from a daemon thread (tests)."""
        self._listen()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, on_listening: Callable[[int], None]) -> None:
        """Serve from this thread (its own process: bench/poll.py)."""
        self._listen()
        on_listening(self.port)
        self._loop.run_forever()

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)


def main() -> None:
    """`python -m tests.telemetry.replay_server SPEC.json`: serve endpoints in their own process
    (bench/poll.py). SPEC: {"endpoints": [{"name", "bodies": [paths], "delay_s"}]}; bodies cycle.
    Prints the port, then serves until killed."""
    import json
    import sys
    from pathlib import Path

    spec = json.loads(Path(sys.argv[1]).read_text())
    texts: dict[str, str] = {}
    server = ReplayServer()
    for entry in spec["endpoints"]:
        bodies = [texts.setdefault(path, Path(path).read_text()) for path in entry.get("bodies", ())]
        server.scripts[entry["name"]] = Script(bodies=bodies, delay_s=entry.get("delay_s", 0.0),
                                               cycle=True)
    server.serve_forever(lambda port: print(port, flush=True))


if __name__ == "__main__":
    main()
