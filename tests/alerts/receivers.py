"""A real webhook receiver on loopback (http.server in a thread) for the alert tests."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every POST (its JSON body and Authorization header); answers `status` after
    `delay_s` seconds."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.posts: list[tuple[dict, str | None]] = []
        self.status, self.delay_s = status, delay_s
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay_s)
                with receiver.arrived:
                    receiver.posts.append((json.loads(body), self.headers.get("Authorization")))
                    receiver.arrived.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=in-the-url"

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[tuple[dict, str | None]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.posts) >= count, timeout_s)
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
