"""A stand-in for Ollama's HTTP API, run as its own process (Ollama itself is a Go binary from
ollama.com: no PyPI or Debian package installs it here). It answers what Ollama documents for
/api/version, /api/tags and /api/ps, and 404 for /metrics (Ollama has none).

The script is copied to a file named `ollama` and run as `python .../ollama serve PORT`, so the
process table shows what a real Ollama's does: a command whose program is named `ollama`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOADED = {"name": "llama3.2:1b", "model": "llama3.2:1b", "size": 1800000000,
          "size_vram": 1600000000, "digest": "baf6a787fdff",
          "expires_at": "2026-11-26T04:10:00.000000Z"}
ANSWERS = {"/api/version": {"version": "0.5.7"},
           "/api/tags": {"models": [{"name": "llama3.2:1b", "size": 1300000000},
                                    {"name": "qwen2.5:0.5b", "size": 400000000}]},
           "/api/ps": {"models": [LOADED]}}

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        answer = ANSWERS.get(self.path)
        body = json.dumps(answer).encode() if answer is not None else b"404 page not found"
        self.send_response(200 if answer is not None else 404)
        self.send_header("Content-Type", "application/json" if answer is not None else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
'''
LOADED_MODEL = "llama3.2:1b"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_fake_ollama(directory: Path) -> tuple[subprocess.Popen, str]:
    """The process and its URL, once it answers /api/version (within 20 s)."""
    program = directory / "ollama"
    program.write_text(SCRIPT)
    port = free_port()
    process = subprocess.Popen([sys.executable, str(program), "serve", str(port)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake ollama exited: {process.stderr.read().decode()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("fake ollama did not listen within 20 s")

