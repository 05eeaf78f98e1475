"""A loopback HTTP server that plays serving endpoints back: `/<name>/health`, `/<name>/v1/models`
and `/<name>/metrics` answer from a per-endpoint script (recorded /metrics bodies in turn, HTTP
statuses, delays, a required API key). Used by the telemetry tests and by bench/poll.py.

Real sockets, real HTTP (stdlib http.server, keep-alive); only the server's content is canned.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    """What one endpoint answers. `bodies` are returned in turn, the last one repeating."""

    bodies: list[str] = field(default_factory=list)
    health_status: int = 200
    metrics_status: int = 200
    delay_s: float = 0.0
    required_key: str | None = None
    served: int = 0  # /metrics bodies handed out so far
    slow_finished: threading.Event = field(default_factory=threading.Event)
    seen_authorization: list[str] = field(default_factory=list)


class ReplayServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.scripts: dict[str, Script] = {}
        handler = _make_handler(self.scripts)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, name: str, script: Script) -> str:
        self.scripts[name] = script
        return self.url(name)

    def start(self) -> "ReplayServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(scripts: dict[str, Script]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            _, name, rest = (self.path.split("/", 2) + ["", ""])[:3]
            script = scripts.get(name)
            if script is None:
                return self._answer(404, "no such endpoint\n")
            script.seen_authorization.append(self.headers.get("Authorization", ""))
            if script.delay_s:
                time.sleep(script.delay_s)
                script.slow_finished.set()
            if script.required_key and self.headers.get("Authorization") != f"Bearer {script.required_key}":
                return self._answer(401, "unauthorized\n")
            if rest in ("health", "v1/models"):
                return self._answer(script.health_status, "{}" if rest == "v1/models" else "")
            if rest == "metrics":
                return self._answer(script.metrics_status, self._next_body(script))
            return self._answer(404, "not found\n")

        def _next_body(self, script: Script) -> str:
            if not script.bodies:
                return ""
            body = script.bodies[min(script.served, len(script.bodies) - 1)]
            script.served += 1
            return body

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts)
                pass

        def log_message(self, *_: object) -> None:
            pass

    return Handler
