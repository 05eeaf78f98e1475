"""A real little model service that `command` targets start and stop in the tests.

  service_ctl.py start STATE_DIR PORT MODEL VERSION PATH [--fail-version N]
      stop the running service (if any), start `serve` detached, wait until it answers
  service_ctl.py stop STATE_DIR
  service_ctl.py serve PORT MODEL VERSION [--fail-health]

The service answers GET /health (500 when told to fail) and POST /v1/completions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def stop(state: Path) -> None:
    pid_file = state / "pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _gone(pid):
                break
            time.sleep(0.02)
    except ProcessLookupError:
        pass
    pid_file.unlink()


def _gone(pid: int) -> bool:
    """Exited, or a zombie nobody has reaped yet (PID 1 in a container may not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def start(state: Path, port: int, model: str, version: str, path: str, fail_version: str | None) -> None:
    state.mkdir(parents=True, exist_ok=True)
    with (state / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"model": model, "version": version, "path": path,
                              "path_exists": Path(path).is_dir()}) + "\n")
    stop(state)
    command = [sys.executable, __file__, "serve", str(port), model, version]
    if fail_version == version:
        command.append("--fail-health")
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    (state / "pid").write_text(str(process.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit("service did not start")


def serve(port: int, model: str, version: str, fail_health: bool) -> None:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(500 if fail_health else 200, {"model": model, "version": version})
            else:
                self._reply(404, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            self.rfile.read(length)
            self._reply(200, {"choices": [{"text": f" served by {model}@{version}"}]})

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main(argv: list[str]) -> None:
    verb = argv[0]
    if verb == "start":
        fail = argv[argv.index("--fail-version") + 1] if "--fail-version" in argv else None
        start(Path(argv[1]), int(argv[2]), argv[3], argv[4], argv[5], fail)
    elif verb == "stop":
        stop(Path(argv[1]))
    elif verb == "serve":
        serve(int(argv[1]), argv[2], argv[3], "--fail-health" in argv)


if __name__ == "__main__":
    main(sys.argv[1:])
